// The Socket.IO peer of the fan-out benchmark: rooms, broadcast to a room (the sender
// included, as the chat nodes do), the Redis adapter between nodes. WebSocket transport only,
// as the benchmark's clients connect. PORT and REDIS_URL from the environment, and
// UNIX_SOCKET: a second listener for nginx on the same host, as the chat nodes have.
const { createServer } = require("http");
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/redis-adapter");
const { createClient } = require("redis");

const pub = createClient({ url: process.env.REDIS_URL });
const sub = pub.duplicate();

Promise.all([pub.connect(), sub.connect()]).then(() => {
  const httpServer = createServer();
  const io = new Server(httpServer, {
    adapter: createAdapter(pub, sub),
    transports: ["websocket"],
    serveClient: false,
  });
  io.on("connection", (socket) => {
    socket.on("join", (room) => {
      socket.join(room);
      socket.emit("joined", room);
    });
    socket.on("message", (message) => io.to(message.room).emit("message", message));
  });
  httpServer.listen(Number(process.env.PORT), "127.0.0.1");
  if (process.env.UNIX_SOCKET) {
    const socketServer = createServer();
    io.attach(socketServer);
    socketServer.listen(process.env.UNIX_SOCKET);
  }
});

for (const signal of ["SIGTERM", "SIGINT"]) process.on(signal, () => process.exit(0));
