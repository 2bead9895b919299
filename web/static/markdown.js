/**
 * Markdown for model output: `marked` to HTML, then DOMPurify to a DOM fragment.
 *
 * Model output is untrusted. Raw HTML inside the Markdown is escaped to text before DOMPurify
 * even sees it (so `<img onerror=...>` shows as text and creates no element), images become
 * plain links (no request leaves the page on the model's say-so), and the sanitiser's result is
 * a fragment that replaces the element's children: no string is ever assigned as HTML.
 */
import { Marked } from './vendor/marked/marked.esm.js';
import DOMPurify from './vendor/dompurify/purify.es.mjs';

const ESCAPES = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

/**
 * Escape text for use inside HTML.
 * @param {string} text
 * @returns {string}
 */
export function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ESCAPES[c]);
}

const marked = new Marked({ gfm: true, breaks: false, async: false });
marked.use({
  renderer: {
    html(token) {
      const text = escapeHtml(token.text);
      return token.block ? `<p>${text.trimEnd()}</p>\n` : text;
    },
    image(token) {
      const label = escapeHtml(token.text || token.href);
      return `<a href="${escapeHtml(token.href)}">${label}</a>`;
    },
  },
});

const PURIFY = {
  RETURN_DOM_FRAGMENT: true,
  ALLOW_DATA_ATTR: false,
  FORBID_TAGS: ['style', 'img', 'svg', 'math', 'form', 'button', 'textarea', 'select', 'iframe'],
  FORBID_ATTR: ['style', 'id', 'name'],
};

const LANGUAGE_CLASS = /^language-[\w+#.-]{1,32}$/;

// Only the code-language classes marked emits survive: model output cannot borrow the
// page's own classes to dress up as a badge or a button.
DOMPurify.addHook('uponSanitizeAttribute', (node, data) => {
  if (data.attrName === 'class' && !LANGUAGE_CLASS.test(data.attrValue)) data.keepAttr = false;
});
DOMPurify.addHook('afterSanitizeAttributes', (node) => {
  if (node.tagName === 'A' && node.hasAttribute('href')) {
    node.setAttribute('target', '_blank');
    node.setAttribute('rel', 'noopener noreferrer nofollow');
  }
});

/**
 * Markdown to a sanitised DOM fragment.
 * @param {string} text Markdown (possibly cut mid-stream)
 * @returns {DocumentFragment}
 */
export function markdownFragment(text) {
  return DOMPurify.sanitize(marked.parse(text).trim(), PURIFY);
}

/**
 * Replace `el`'s children with `text` rendered as sanitised Markdown.
 * @param {Element} el
 * @param {string} text
 */
export function renderMarkdown(el, text) {
  el.replaceChildren(markdownFragment(text));
}
