"""The backends on Redis or a Redis Cluster: the only code that imports redis-py."""
