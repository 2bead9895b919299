/**
 * A room's turns as the protocol's TURN objects, and the rules for applying the sequenced
 * events (`turn.start`, `delta`, `turn.end`) to them. Pure functions over plain objects: no
 * I/O, no DOM, so any client (or test) can reuse them.
 */

/**
 * An empty choice in the TURN shape.
 * @param {number} index
 */
export function emptyChoice(index) {
  return { index, content: '', reasoning: '', refusal: '', tool_calls: [], finish_reason: null };
}

/**
 * An empty, streaming TURN.
 * @param {string} id
 */
export function emptyTurn(id) {
  return {
    id, status: 'streaming', prompt: '', model: '', started_at: null, ended_at: null,
    choices: [], usage: null, error: null,
  };
}

/** Find or create the entry with `index` in a list kept sorted by index. */
function byIndex(list, index, make) {
  let item = list.find((x) => x.index === index);
  if (!item) {
    item = make(index);
    list.push(item);
    list.sort((a, b) => a.index - b.index);
  }
  return item;
}

/** Append one `delta` choice to a TURN choice. */
function applyChoiceDelta(choice, delta) {
  for (const key of ['content', 'reasoning', 'refusal']) {
    if (typeof delta[key] === 'string') choice[key] += delta[key];
  }
  for (const tc of delta.tool_calls ?? []) {
    const call = byIndex(choice.tool_calls, tc.index, (index) => ({
      index, id: null, name: null, arguments: '',
    }));
    // id and name are set once, when first seen; arguments grow.
    if (call.id === null && typeof tc.id === 'string') call.id = tc.id;
    if (call.name === null && typeof tc.name === 'string') call.name = tc.name;
    if (typeof tc.arguments === 'string') call.arguments += tc.arguments;
  }
}

/**
 * Apply one sequenced event to `turns` (a Map of TURN objects by id, oldest first). The
 * caller has checked its seq continuity.
 * @param {Map<string, object>} turns
 * @param {object} ev a `turn.start`, `delta` or `turn.end` event
 * @returns {object} the TURN the event changed
 */
export function applyEvent(turns, ev) {
  let turn = turns.get(ev.turn);
  if (!turn) {
    turn = emptyTurn(ev.turn);
    turns.set(ev.turn, turn);
  }
  if (ev.type === 'turn.start') {
    Object.assign(turn, { prompt: ev.prompt, model: ev.model, started_at: ev.started_at });
  } else if (ev.type === 'delta') {
    for (const delta of ev.choices) {
      applyChoiceDelta(byIndex(turn.choices, delta.index, emptyChoice), delta);
    }
  } else if (ev.type === 'turn.end') {
    turn.status = ev.status;
    turn.ended_at = Date.now() / 1000;
    for (const c of ev.choices) {
      const choice = byIndex(turn.choices, c.index, emptyChoice);
      if (c.finish_reason) choice.finish_reason = c.finish_reason; // null never clears
    }
    turn.usage = ev.usage ?? turn.usage;
    turn.error = ev.error ?? null;
  }
  return turn;
}
