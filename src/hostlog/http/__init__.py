"""The HTTP server: logs from anywhere (``[http]``, docs/http.md).

``server.py`` listens, checks keys (``keys.py``) and writes the audit trail;
``gatewayd.py`` serves journal-gatewayd's API, ``api.py`` the native
``/api/v1/logs``, ``tail.py`` the live tail, ``viewer.py`` the web viewer.
The formats they write are the query's own (``hostlog.query.output``), and
what they select is decided by the query's filters (``hostlog.query``): one
filter engine for the CLI and the server.
"""
