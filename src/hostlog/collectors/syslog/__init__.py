"""The syslog collector: framing (RFC 6587), grammar (RFC 5424 / RFC 3164), batch
parsing, the compiled splitter, the clock, and the servers (UDP, TCP, TLS, unix)."""
