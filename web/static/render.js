/**
 * The conversation on the room page: one list item per turn, one column per choice.
 *
 * Views read the client's TURN objects and sync the DOM to them. Changes are batched: a delta
 * only marks its turn dirty, and dirty turns are re-rendered at most once per animation frame.
 * Text from the model or the prompt only ever reaches the page as `textContent` or through
 * `renderMarkdown` (sanitised).
 */
import { renderMarkdown } from './markdown.js';

/**
 * Create an element. `text` sets textContent; other keys are attributes (skipped when
 * null, undefined or false; `true` gives an empty attribute).
 * @param {string} tag
 * @param {Record<string, any>} [attrs]
 * @param {...(Node|string)} children
 * @returns {HTMLElement}
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'text') el.textContent = value;
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  el.append(...children);
  return el;
}

/**
 * Copy text to the clipboard; falls back to a hidden textarea where the Clipboard API is
 * missing or refused (plain-http pages on another host).
 * @param {string} text
 * @returns {Promise<boolean>}
 */
export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    const area = h('textarea', { class: 'offscreen', readonly: true, 'aria-hidden': 'true' });
    area.value = text;
    document.body.append(area);
    area.select();
    let ok = false;
    try {
      ok = document.execCommand('copy');
    } catch {
      ok = false;
    }
    area.remove();
    return ok;
  }
}

const FINISH_BADGES = {
  length: 'length limit',
  content_filter: 'content filtered',
  tool_calls: 'tool calls',
};

const STATUS_BADGES = {
  streaming: 'streaming',
  cancelled: 'cancelled',
  truncated: 'truncated',
  failed: 'failed',
};

/** A badge element; `kind` goes to data-kind for styling and tests. */
function badge(kind, label) {
  return h('span', { class: 'badge', 'data-kind': kind, text: label });
}

/** Tool-call arguments, pretty-printed once the turn ended and they parse as JSON. */
function formatArguments(args, ended) {
  if (!ended) return args;
  try {
    return JSON.stringify(JSON.parse(args), null, 2);
  } catch {
    return args;
  }
}

/** One choice of a turn: reasoning, answer, refusal, tool calls, finish badge, copy button. */
class ChoiceView {
  constructor(index) {
    this.choice = null;
    this.reasoningText = h('div', { class: 'reasoning-text' });
    this.reasoning = h(
      'details',
      { class: 'reasoning', hidden: true },
      h('summary', { text: 'Reasoning' }),
      this.reasoningText,
    );
    this.content = h('div', { class: 'content md', 'aria-live': 'polite', 'aria-busy': 'true' });
    this.refusal = h('p', { class: 'refusal', hidden: true });
    this.tools = h('ul', { class: 'tool-calls', hidden: true, 'aria-label': 'Tool calls' });
    this.badges = h('span', { class: 'badges' });
    this.copyButton = h('button', { type: 'button', class: 'copy', text: 'Copy' });
    this.copyButton.addEventListener('click', () => this.copy());
    this.el = h(
      'section',
      { class: 'choice', 'data-index': index, 'aria-label': `Choice ${index + 1}` },
      h('h3', { class: 'choice-title', text: `Choice ${index + 1}` }),
      this.reasoning,
      this.content,
      this.refusal,
      this.tools,
      h('div', { class: 'choice-meta' }, this.badges, this.copyButton),
    );
    this.shown = { content: -1, reasoning: -1, refusal: -1, tools: '', badges: '' };
  }

  /** Bring the DOM up to date with `choice`; `ended` when the turn is over. */
  sync(choice, ended) {
    this.choice = choice;
    const shown = this.shown;
    if (shown.content !== choice.content.length) {
      renderMarkdown(this.content, choice.content);
      shown.content = choice.content.length;
    }
    this.content.setAttribute('aria-busy', String(!ended));
    if (shown.reasoning !== choice.reasoning.length) {
      this.reasoningText.textContent = choice.reasoning;
      this.reasoning.hidden = choice.reasoning === '';
      shown.reasoning = choice.reasoning.length;
    }
    if (shown.refusal !== choice.refusal.length) {
      this.refusal.textContent = choice.refusal;
      this.refusal.hidden = choice.refusal === '';
      shown.refusal = choice.refusal.length;
    }
    const toolsKey = `${ended}:${choice.tool_calls.map((c) => `${c.name}/${c.arguments.length}`)}`;
    if (shown.tools !== toolsKey) {
      this.tools.replaceChildren(
        ...choice.tool_calls.map((call) =>
          h(
            'li',
            { class: 'tool-call' },
            h('span', { class: 'tool-name', text: call.name ?? '(unnamed tool)' }),
            call.id ? h('code', { class: 'tool-id', text: call.id }) : '',
            h('pre', { class: 'tool-args' }, h('code', { text: formatArguments(call.arguments, ended) })),
          ),
        ),
      );
      this.tools.hidden = choice.tool_calls.length === 0;
      shown.tools = toolsKey;
    }
    this.copyButton.hidden = !(choice.content || choice.refusal || choice.tool_calls.length);
    const reason = choice.finish_reason;
    if (shown.badges !== reason) {
      const label = reason && reason !== 'stop' ? (FINISH_BADGES[reason] ?? reason) : null;
      this.badges.replaceChildren(...(label ? [badge(reason, label)] : []));
      shown.badges = reason;
    }
  }

  /** Copy the answer's Markdown (or the refusal, or the tool calls). */
  async copy() {
    const c = this.choice;
    if (!c) return;
    const text =
      c.content || c.refusal || c.tool_calls.map((t) => `${t.name}(${t.arguments})`).join('\n');
    const ok = await copyText(text);
    this.copyButton.textContent = ok ? 'Copied' : 'Copy failed';
    setTimeout(() => {
      this.copyButton.textContent = 'Copy';
    }, 1500);
  }
}

/** One turn: the prompt, its choices side by side, status badges, error and usage. */
class TurnView {
  constructor(turn) {
    this.turn = turn;
    this.choices = new Map();
    this.prompt = h('p', { class: 'prompt-text' });
    this.choicesEl = h('div', { class: 'choices', 'data-count': '1' });
    this.model = h('span', { class: 'model' });
    this.status = h('span', { class: 'badges turn-badges' });
    this.usage = h('span', { class: 'usage' });
    this.error = h('p', { class: 'turn-error', hidden: true });
    this.el = h(
      'li',
      { class: 'turn', 'data-turn': turn.id },
      h(
        'article',
        { 'aria-label': 'Turn' },
        h('div', { class: 'prompt' }, h('span', { class: 'who', text: 'Prompt' }), this.prompt),
        this.choicesEl,
        this.error,
        h('footer', { class: 'turn-meta' }, this.model, this.status, this.usage),
      ),
    );
    this.shownStatus = null;
  }

  _choice(index) {
    let view = this.choices.get(index);
    if (!view) {
      view = new ChoiceView(index);
      this.choices.set(index, view);
      const after = [...this.choices.keys()].filter((i) => i > index).sort((a, b) => a - b)[0];
      this.choicesEl.insertBefore(view.el, after === undefined ? null : this.choices.get(after).el);
    }
    return view;
  }

  /** Bring the DOM up to date with the TURN object. */
  sync() {
    const t = this.turn;
    const ended = t.status !== 'streaming';
    this.el.dataset.status = t.status;
    if (this.prompt.textContent !== t.prompt) this.prompt.textContent = t.prompt;
    if (this.model.textContent !== t.model) this.model.textContent = t.model;
    // A streaming turn shows an (empty, waiting) first choice before any text arrives.
    const choices = t.choices.length ? t.choices : [{ index: 0, content: '', reasoning: '',
      refusal: '', tool_calls: [], finish_reason: null }];
    for (const c of choices) this._choice(c.index).sync(c, ended);
    this.choicesEl.dataset.count = String(this.choices.size);
    if (this.shownStatus !== t.status) {
      const label = STATUS_BADGES[t.status];
      this.status.replaceChildren(...(label ? [badge(t.status, label)] : []));
      this.shownStatus = t.status;
    }
    const err = t.error ? `${t.error.code}: ${t.error.message}` : '';
    if (this.error.textContent !== err) {
      this.error.textContent = err;
      this.error.hidden = err === '';
    }
    const u = t.usage;
    const usage = u
      ? `${u.prompt_tokens ?? '?'} prompt + ${u.completion_tokens ?? '?'} completion = ` +
        `${u.total_tokens ?? '?'} tokens`
      : '';
    if (this.usage.textContent !== usage) this.usage.textContent = usage;
  }
}

/** The list of turns, kept in sync with a FanoutClient's TURN objects. */
export class ConversationView {
  /**
   * @param {HTMLElement} list the `<ol>` that holds the turns
   * @param {HTMLElement} [empty] shown while there are no turns
   */
  constructor(list, empty) {
    this.list = list;
    this.empty = empty ?? null;
    this.views = new Map();
    this.dirty = new Set();
    this.frame = 0;
  }

  /** Replace everything with `turns` (a snapshot). */
  reset(turns) {
    cancelAnimationFrame(this.frame);
    this.frame = 0;
    this.dirty.clear();
    this.views = new Map();
    for (const turn of turns) {
      const view = new TurnView(turn);
      view.sync();
      this.views.set(turn.id, view);
    }
    this.list.replaceChildren(...[...this.views.values()].map((v) => v.el));
    this._toggleEmpty();
    scrollToEnd();
  }

  /** A turn changed (or started): re-render it with the next animation frame. */
  touch(turn) {
    let view = this.views.get(turn.id);
    if (!view) {
      view = new TurnView(turn);
      this.views.set(turn.id, view);
      this.list.append(view.el);
      this._toggleEmpty();
    }
    view.turn = turn;
    this.dirty.add(view);
    if (!this.frame) this.frame = requestAnimationFrame(() => this._flush());
  }

  _flush() {
    this.frame = 0;
    const stick = nearEnd();
    for (const view of this.dirty) view.sync();
    this.dirty.clear();
    if (stick) scrollToEnd();
  }

  _toggleEmpty() {
    if (this.empty) this.empty.hidden = this.views.size > 0;
  }
}

function nearEnd() {
  const doc = document.documentElement;
  return window.innerHeight + window.scrollY >= doc.scrollHeight - 120;
}

function scrollToEnd() {
  window.scrollTo({ top: document.documentElement.scrollHeight });
}
