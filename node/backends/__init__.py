"""What nodes share, behind three interfaces (broker, presence, coordination), with an in-memory
implementation (one node) and a Redis one (one Redis or a Redis Cluster); the envelope is the
wire format between them."""
