// Types of chat-client.js (docs/client-js.md), for TypeScript users.

export interface ChatClientOptions {
  /** Display name (anonymous mode); with a JWT the token names the user. */
  name?: string | null;
  /** The identity provider's JWT (JWT mode). */
  token?: string | null;
  /** Called for a fresh JWT on every reconnect and before the current one expires. */
  getToken?: () => string | Promise<string>;
  /** The WebSocket implementation: the page's by default; in Node.js, the ws package. */
  WebSocket?: new (url: string) => any;
  /** Reconnect delays: uniform(0, min(backoffMaxMs, backoffFirstMs * 2^attempt)). */
  backoffFirstMs?: number;
  backoffMaxMs?: number;
  /** A ping after this long without a frame; no answer within half of it drops the path. */
  heartbeatMs?: number;
  /** Messages that may wait for their acknowledgement at once (offline ones included). */
  queueLimit?: number;
  /** Before expiry, a JWT is refreshed this many milliseconds early (with getToken). */
  refreshBeforeMs?: number;
  /** A history page refused as rate_limited is asked for again after this long. */
  pageRetryMs?: number;
}

export type ChatState = "idle" | "connecting" | "online" | "reconnecting" | "closed";

export interface Member { userId: string; name: string; }

export interface Message {
  type: "message";
  room: string;
  seq: number;
  id: string;
  user: string;
  userId: string;
  text: string;
  timestamp: string;
  clientId?: string;
  system?: boolean;
  deleted?: boolean;
}

export interface Joined {
  room: string;
  seq: number;
  epoch: string;
  more: boolean;
  members: Member[];
  userCount: number;
  large: boolean;
  /** Present on a resume: false means messages were missed. */
  recovered?: boolean;
}

export interface Identity { userId: string; name: string; node: string; }

export interface ChatEvents {
  message: (message: Message) => void;
  joined: (snapshot: Joined) => void;
  left: (left: { room: string; reason: string | null }) => void;
  /** A member joined or left the room (by the presence-order rule; not in a large room). */
  presence: (change: { room: string; userId: string; name: string; joined: boolean }) => void;
  members: (members: { room: string; members: Member[]; userCount: number; large: boolean }) => void;
  recovered: (resume: { room: string; recovered: boolean }) => void;
  state: (state: ChatState, detail: string) => void;
  pending: (pending: { clientId: string; text: string }[]) => void;
  lost: (lost: { room: string; from: number; to: number }) => void;
  reset: (reset: { room: string; seq: number; epoch: string }) => void;
  deleted: (deleted: { room: string; seq: number }) => void;
  shutdown: (shutdown: { retryAfterMs: number }) => void;
  error: (error: ChatError) => void;
}

export class ChatError extends Error {
  code: string;
  constructor(code: string, message: string);
}

export function isFinalClose(code: number): boolean;
export function newClientId(): string;

export class ChatClient {
  constructor(url: string, options?: ChatClientOptions);
  readonly state: ChatState;
  readonly userId: string | null;
  readonly name: string | null;
  readonly node: string | null;
  readonly room: string | null;
  readonly lastSeq: number;
  /** The room history's incarnation that lastSeq belongs to. */
  readonly epoch: string | null;
  /** JWT mode: the current token's exp (seconds since the epoch). */
  readonly expiresAt: number | null;
  readonly connections: number;
  on<E extends keyof ChatEvents>(event: E, listener: ChatEvents[E]): () => void;
  off<E extends keyof ChatEvents>(event: E, listener: ChatEvents[E]): void;
  connect(options?: { name?: string }): Promise<Identity>;
  join(room: string): Promise<Joined>;
  leave(): Promise<void>;
  send(text: string, options?: { clientId?: string }): Promise<number>;
  pending(): { clientId: string; text: string }[];
  history(before: number, limit?: number): Promise<{ messages: Message[]; more: boolean; epoch: string }>;
  listRooms(offset?: number, limit?: number): Promise<{ rooms: { name: string; userCount: number }[]; total: number; next: number | null }>;
  members(room?: string): Member[];
  userCount(room?: string): number;
  /** Drop the current connection and reconnect (resuming): when the application knows the
   *  network changed, say. */
  drop(why?: string): void;
  close(code?: number, reason?: string): void;
}
