"""The application's say in the chat: the hooks a node asks before it accepts a message or a
user (node.hooks.application), and the signed webhooks it sends for room events, from a
queue kept in the backend (node.hooks.delivery)."""
