/**
 * The lobby: keeps the room table fresh from GET /api/rooms and opens rooms by name.
 */
import { ROOM_NAME_RE } from './fanout-client.js';
import { h } from './render.js';

const REFRESH_MS = 2000;

const form = document.getElementById('open-room');
const input = document.getElementById('room-name');
const error = document.getElementById('room-error');
const table = document.getElementById('rooms');
const body = document.getElementById('room-rows');
const none = document.getElementById('no-rooms');

const RULE = 'Room names are 1 to 64 letters, digits, "_", "." or "-", starting with a letter or digit.';

function check() {
  const name = input.value.trim();
  const ok = ROOM_NAME_RE.test(name);
  input.setCustomValidity(ok || name === '' ? '' : RULE);
  input.setAttribute('aria-invalid', String(!ok && name !== ''));
  error.textContent = ok || name === '' ? '' : RULE;
  return ok ? name : null;
}

input.addEventListener('input', check);
form.addEventListener('submit', (event) => {
  event.preventDefault();
  const name = check();
  if (name === null) {
    error.textContent = RULE;
    input.setAttribute('aria-invalid', 'true');
    input.focus();
    return;
  }
  window.location.assign(`/rooms/${encodeURIComponent(name)}`);
});

function row(room) {
  const state = room.streaming
    ? h('span', { class: 'badge', 'data-kind': 'streaming', text: 'streaming' })
    : 'idle';
  return h(
    'tr',
    { 'data-room': room.name },
    h('th', { scope: 'row' }, h('a', { href: `/rooms/${encodeURIComponent(room.name)}`, text: room.name })),
    h('td', { class: 'viewers', text: String(room.viewers) }),
    h('td', { text: String(room.turns) }),
    h('td', { class: 'state' }, state),
  );
}

async function refresh() {
  if (document.hidden) return;
  try {
    const response = await fetch('/api/rooms', { headers: { Accept: 'application/json' } });
    if (!response.ok) return;
    const { rooms } = await response.json();
    rooms.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    body.replaceChildren(...rooms.map(row));
    table.hidden = rooms.length === 0;
    none.hidden = rooms.length > 0;
  } catch {
    // The server is away; the next refresh will tell.
  }
}

setInterval(refresh, REFRESH_MS);
document.addEventListener('visibilitychange', refresh);
