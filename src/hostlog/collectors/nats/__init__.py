"""The NATS JetStream input (``[[source]] type = "nats"``): a durable pull
consumer of the stream ``[[forward]] type = "nats"`` agents publish to."""
