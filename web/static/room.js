/**
 * The room page: wires a FanoutClient to the conversation view, the prompt box, the Stop
 * button, the viewer count and the connection indicator.
 */
import { FanoutClient } from './fanout-client.js';
import { ConversationView } from './render.js';

const main = document.querySelector('main[data-room]');
const els = {
  turns: document.getElementById('turns'),
  empty: document.getElementById('empty'),
  viewers: document.getElementById('viewers'),
  conn: document.getElementById('conn'),
  composer: document.getElementById('composer'),
  readonly: document.getElementById('readonly'),
  prompt: document.getElementById('prompt'),
  send: document.getElementById('send'),
  stop: document.getElementById('stop'),
  notice: document.getElementById('notice'),
};

const STATE_LABELS = {
  idle: 'not connected',
  connecting: 'connecting…',
  live: 'live',
  reconnecting: 'reconnecting…',
  closed: 'disconnected',
};

/**
 * The auth token (token mode): from `?token=` in the page's URL, kept for this tab in
 * sessionStorage so reloads work, and taken out of the address bar so it does not linger in
 * history or screenshots.
 */
function pageToken() {
  const url = new URL(window.location.href);
  const given = url.searchParams.get('token');
  if (given) {
    sessionStorage.setItem('fanout-token', given);
    url.searchParams.delete('token');
    window.history.replaceState(null, '', url);
  }
  return given || sessionStorage.getItem('fanout-token');
}

const client = new FanoutClient(main.dataset.room, { token: pageToken() });
const view = new ConversationView(els.turns, els.empty);

function notice(text) {
  els.notice.textContent = text;
}

function setViewers(count) {
  els.viewers.textContent = `${count} ${count === 1 ? 'viewer' : 'viewers'}`;
}

/** Show what the role allows; Send only when live and idle, Stop while a turn streams. */
function updateControls() {
  const known = client.role !== null;
  const canPrompt = known && client.role !== 'viewer';
  els.composer.hidden = !canPrompt;
  els.readonly.hidden = !known || canPrompt;
  const live = client.state === 'live';
  const streaming = client.streamingTurn();
  els.send.disabled = !live || streaming !== null;
  els.stop.hidden = streaming === null;
  els.stop.disabled = !live;
}

client.on('state', ({ state }) => {
  els.conn.dataset.state = state;
  els.conn.textContent = STATE_LABELS[state] ?? state;
  updateControls();
});
client.on('welcome', (welcome) => {
  setViewers(welcome.viewers);
  updateControls();
});
client.on('presence', ({ viewers }) => setViewers(viewers));
client.on('snapshot', ({ turns }) => {
  view.reset(turns);
  updateControls();
});
client.on('turn.start', ({ turn }) => {
  view.touch(turn);
  updateControls();
});
client.on('delta', ({ turn }) => view.touch(turn));
client.on('turn.end', ({ turn }) => {
  view.touch(turn);
  updateControls();
});
client.on('error', (frame) => notice(`Refused: ${frame.message} (${frame.code})`));
client.on('closed', ({ code, reason }) => notice(`Disconnected (${code}): ${reason}`));

els.composer.addEventListener('submit', (event) => {
  event.preventDefault();
  const content = els.prompt.value;
  if (!content.trim()) {
    notice('Type a prompt first.');
    els.prompt.focus();
    return;
  }
  client.prompt(content);
  els.prompt.value = '';
  notice('');
});

// Enter sends, Shift+Enter makes a new line (not while an input method is composing).
els.prompt.addEventListener('keydown', (event) => {
  if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    if (!els.send.disabled) els.composer.requestSubmit();
  }
});

els.stop.addEventListener('click', () => {
  const turn = client.streamingTurn();
  if (turn) client.cancel(turn.id);
});

client.start();
// A handle for the browser console (and the browser tests).
window.fanoutClient = client;
