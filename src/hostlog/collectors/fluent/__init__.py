"""The Fluent Forward input: the protocol (sans-IO, ``protocol``) and its TCP/TLS
servers (``collector``)."""
