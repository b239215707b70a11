"""The listening side: sockets, HTTP heads and WebSocket upgrades, RFC 6455 per connection, who
may connect and how much they may be sent."""
