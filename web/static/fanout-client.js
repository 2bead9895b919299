/**
 * A browser client for the fanout WebSocket protocol, version 1 (PROTOCOL.md).
 *
 * It keeps a room's turns as the protocol's TURN objects: a snapshot replaces them, sequenced
 * events are applied in seq order (a `delta` appends its strings, tool-call `id`/`name` are set
 * once), and every event is checked for continuity (`first_seq` or `seq` == last seq + 1). After
 * a drop, a gap or a server restart it reconnects with exponential backoff and jitter, asking to
 * resume with `epoch`/`since`; when the server cannot recover the history it sends a fresh
 * snapshot, which replaces the state. Either way no text is shown twice or lost.
 *
 * Events (all `CustomEvent`s; `detail` in brackets):
 * - `state` [{state, delayMs?}]: `connecting`, `live`, `reconnecting` or `closed`
 * - `welcome` [the welcome frame], `presence` [{viewers}]
 * - `snapshot` [{turns}]: the whole conversation was replaced
 * - `turn.start` [{turn}], `delta` [{turn, event}], `turn.end` [{turn}]: `turn` is the updated
 *   TURN object
 * - `error` [the error frame]: the server refused a frame of ours
 * - `closed` [{code, reason}]: the server closed for good (4500-4503, 1000, ...); no retry
 *
 * @example
 * const client = new FanoutClient('demo');
 * client.on('delta', ({ turn }) => console.log(turn.choices[0].content));
 * client.start();
 * client.prompt('Tell me a joke');
 */

import { applyEvent } from './turns.js';

/** The room-name grammar of PROTOCOL.md. */
export const ROOM_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

/** Close codes after which reconnecting cannot help, with what to tell the user. */
export const FINAL_CLOSES = new Map([
  [1000, 'the server closed the connection'],
  [1003, 'the server refused a binary frame'],
  [1007, 'the server refused a frame that was not UTF-8'],
  [1008, 'the server refused the connection (policy)'],
  [1009, 'a frame was too large'],
  [4500, 'unauthorized: a new token is needed'],
  [4501, 'forbidden: the token does not allow this room'],
  [4502, 'too many bad frames'],
  [4503, 'a limit was reached (rooms, viewers or connections)'],
]);

const MAX_PENDING_PROMPTS = 8;

/**
 * The WebSocket URL of a room on the page's own server.
 * @param {string} room
 * @param {Location} [loc]
 * @returns {string}
 */
export function roomSocketUrl(room, loc = globalThis.location) {
  const scheme = loc.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${loc.host}/api/rooms/${encodeURIComponent(room)}/ws`;
}

/** A random frame id such as `p-1f3a9c0d7e2b4a68` (works outside secure contexts too). */
function randomId(prefix) {
  const words = globalThis.crypto.getRandomValues(new Uint32Array(2));
  return `${prefix}-${[...words].map((w) => w.toString(16).padStart(8, '0')).join('')}`;
}

/** One room's live conversation over the fanout WebSocket protocol. */
export class FanoutClient extends EventTarget {
  /**
   * @param {string} room a room name (PROTOCOL.md grammar)
   * @param {object} [options]
   * @param {string} [options.url] WebSocket URL; defaults to the page's own server
   * @param {string} [options.token] auth token, sent as the `token` query parameter
   * @param {number} [options.minDelayMs=250] first reconnect delay (before jitter)
   * @param {number} [options.maxDelayMs=10000] longest reconnect delay
   * @param {number} [options.stableMs=3000] a connection live this long resets the backoff
   * @param {typeof WebSocket} [options.WebSocket] WebSocket constructor (tests inject one)
   * @param {() => number} [options.random] a Math.random replacement (tests inject one)
   */
  constructor(room, options = {}) {
    super();
    if (!ROOM_NAME_RE.test(room)) throw new TypeError(`bad room name: ${room}`);
    this.room = room;
    this.url = options.url ?? roomSocketUrl(room);
    this.token = options.token ?? null;
    this.minDelayMs = options.minDelayMs ?? 250;
    this.maxDelayMs = options.maxDelayMs ?? 10000;
    this.stableMs = options.stableMs ?? 3000;
    this.WebSocket = options.WebSocket ?? globalThis.WebSocket;
    this.random = options.random ?? Math.random;
    /** @type {'idle'|'connecting'|'live'|'reconnecting'|'closed'} */
    this.state = 'idle';
    /** @type {string|null} */ this.epoch = null;
    /** @type {number|null} last applied seq */ this.seq = null;
    /** @type {string|null} */ this.role = null;
    this.viewers = 0;
    /** @type {Map<string, object>} TURN objects by id, oldest first */
    this.turns = new Map();
    /** @type {{code: number, reason: string}|null} why the client stopped */
    this.closeReason = null;
    /** Counters, for the curious and for tests. */
    this.stats = { connects: 0, recovered: 0, snapshots: 0, gaps: 0, duplicates: 0 };
    this._ws = null;
    this._attempt = 0;
    this._timer = null;
    this._stableTimer = null;
    this._awaitingSnapshot = false;
    this._gapStreak = 0;
    this._stopped = false;
    this._pending = new Map(); // prompt id -> frame, until the room acknowledges it
    this._onOnline = () => this._reconnectSoon();
    this._onOffline = () => this._drop('offline');
  }

  /**
   * Listen to one event; returns a function that removes the listener.
   * @param {string} type
   * @param {(detail: any) => void} fn
   */
  on(type, fn) {
    const listener = (event) => fn(event.detail);
    this.addEventListener(type, listener);
    return () => this.removeEventListener(type, listener);
  }

  /** Connect. Call once. */
  start() {
    this._stopped = false;
    globalThis.addEventListener?.('online', this._onOnline);
    globalThis.addEventListener?.('offline', this._onOffline);
    this._setState('connecting');
    this._open();
  }

  /** Disconnect for good. */
  close() {
    this._stopped = true;
    globalThis.removeEventListener?.('online', this._onOnline);
    globalThis.removeEventListener?.('offline', this._onOffline);
    clearTimeout(this._timer);
    clearTimeout(this._stableTimer);
    const ws = this._ws;
    this._ws = null;
    ws?.close(1000, 'bye');
    this._setState('closed');
  }

  /** The TURN objects, oldest first. */
  turnList() {
    return [...this.turns.values()];
  }

  /** The turn streaming now, or null. */
  streamingTurn() {
    return this.turnList().find((t) => t.status === 'streaming') ?? null;
  }

  /**
   * Ask the room for a turn. Sent now when live, else when the connection is back; re-sent
   * after a reconnect until the room acknowledges it (the id makes that safe: the server
   * starts a turn once per id).
   * @param {string} content
   * @param {{model?: string, options?: object, id?: string}} [extra]
   * @returns {string} the prompt id (an `error` event with this `ref` means it was refused)
   */
  prompt(content, extra = {}) {
    const id = extra.id ?? randomId('p');
    const frame = { type: 'prompt', content, id };
    if (extra.model) frame.model = extra.model;
    if (extra.options) frame.options = extra.options;
    this._pending.set(id, frame);
    while (this._pending.size > MAX_PENDING_PROMPTS) {
      this._pending.delete(this._pending.keys().next().value);
    }
    if (this.state === 'live') this._send(frame);
    return id;
  }

  /**
   * Cancel a streaming turn.
   * @param {string} turnId
   * @returns {boolean} whether the request went out
   */
  cancel(turnId) {
    if (this.state !== 'live') return false;
    return this._send({ type: 'cancel', turn: turnId, id: randomId('c') });
  }

  // --- connection ----------------------------------------------------------------------

  _open() {
    clearTimeout(this._timer);
    this._timer = null;
    const url = new URL(this.url, globalThis.location?.href);
    if (this.token) url.searchParams.set('token', this.token);
    if (this.epoch !== null && this.seq !== null) {
      url.searchParams.set('epoch', this.epoch);
      url.searchParams.set('since', String(this.seq));
    }
    let ws;
    try {
      ws = new this.WebSocket(url.href);
    } catch {
      this._retry();
      return;
    }
    this._ws = ws;
    this._awaitingSnapshot = false;
    this.stats.connects += 1;
    ws.onmessage = (e) => {
      if (this._ws === ws) this._onMessage(e.data);
    };
    ws.onclose = (e) => {
      if (this._ws === ws) this._onClose(e.code, e.reason);
    };
  }

  _send(frame) {
    if (!this._ws || this._ws.readyState !== 1) return false;
    this._ws.send(JSON.stringify(frame));
    return true;
  }

  _onClose(code, reason) {
    this._ws = null;
    clearTimeout(this._stableTimer);
    if (this._stopped) return;
    const final = FINAL_CLOSES.get(code);
    if (final) {
      this._stopped = true;
      this.closeReason = { code, reason: reason || final };
      this._setState('closed');
      this._emit('closed', this.closeReason);
      return;
    }
    this._retry();
  }

  /** Drop the current socket on purpose and connect again (resuming where we are). */
  _drop(why) {
    if (this._stopped || this.state === 'idle') return;
    const ws = this._ws;
    this._ws = null;
    clearTimeout(this._stableTimer);
    ws?.close(1000, why);
    // A first gap resumes at once; repeated ones (a confused server) back off.
    if (why === 'gap' && this._gapStreak <= 1) {
      this._reconnectSoon();
    } else {
      this._retry();
    }
  }

  /** Backoff: exponential, capped, with equal jitter so clients do not come back in step. */
  _delay() {
    const ceiling = Math.min(this.maxDelayMs, this.minDelayMs * 2 ** this._attempt);
    this._attempt += 1;
    return ceiling / 2 + this.random() * (ceiling / 2);
  }

  _retry() {
    if (this._stopped || this._timer !== null) return;
    const delayMs = this._delay();
    this._setState('reconnecting', { delayMs });
    this._timer = setTimeout(() => this._open(), delayMs);
  }

  _reconnectSoon() {
    if (this._stopped || this._ws) return;
    clearTimeout(this._timer);
    this._timer = null;
    this._setState('reconnecting', { delayMs: 0 });
    this._open();
  }

  _goLive() {
    this._setState('live');
    clearTimeout(this._stableTimer);
    this._stableTimer = setTimeout(() => {
      this._attempt = 0;
    }, this.stableMs);
    for (const frame of this._pending.values()) this._send(frame);
  }

  _setState(state, extra = {}) {
    this.state = state;
    this._emit('state', { state, ...extra });
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  // --- frames --------------------------------------------------------------------------

  _onMessage(data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    switch (frame?.type) {
      case 'welcome':
        this._onWelcome(frame);
        break;
      case 'snapshot':
        this._onSnapshot(frame);
        break;
      case 'turn.start':
      case 'delta':
      case 'turn.end':
        this._onSequenced(frame);
        break;
      case 'presence':
        this.viewers = frame.viewers;
        this._emit('presence', { viewers: frame.viewers });
        break;
      case 'error':
        if (frame.ref) this._pending.delete(frame.ref);
        this._emit('error', frame);
        break;
      default:
        break; // unknown frames are ignored, as the protocol may grow
    }
  }

  _onWelcome(w) {
    this.role = w.role;
    this.viewers = w.viewers;
    if (w.recovered && w.epoch !== this.epoch) {
      // Cannot happen with a correct server; start over from a snapshot.
      this.epoch = null;
      this.seq = null;
      this._drop('gap');
      return;
    }
    this._awaitingSnapshot = !w.recovered;
    this._emit('welcome', w);
    if (w.recovered) {
      this.stats.recovered += 1;
      this._goLive();
    }
  }

  _onSnapshot(s) {
    this._awaitingSnapshot = false;
    this.epoch = s.epoch;
    this.seq = s.seq;
    this.turns = new Map(s.turns.map((t) => [t.id, t]));
    this.stats.snapshots += 1;
    this._emit('snapshot', { turns: this.turnList() });
    this._goLive();
  }

  _onSequenced(ev) {
    if (this._awaitingSnapshot || this.seq === null) return;
    if (ev.seq <= this.seq) {
      this.stats.duplicates += 1; // already applied: applying it again would repeat text
      return;
    }
    const first = ev.first_seq ?? ev.seq;
    if (first !== this.seq + 1) {
      // A gap: resume from what we have; if resuming keeps failing, start from a snapshot.
      this.stats.gaps += 1;
      this._gapStreak += 1;
      if (this._gapStreak > 1) this.seq = null;
      this._drop('gap');
      return;
    }
    this._gapStreak = 0;
    this.seq = ev.seq;
    const turn = applyEvent(this.turns, ev);
    if (ev.type === 'turn.start') {
      for (const [id, frame] of this._pending) {
        if (frame.content === ev.prompt) this._pending.delete(id);
      }
    }
    this._emit(ev.type, ev.type === 'delta' ? { turn, event: ev } : { turn });
  }
}
