// ChittyChattyChat progressive enhancement. Every feature works without this file (forms post,
// pages refresh); with it, the room is live, Enter sends, times are local, the title counts.
(() => {
  const messages = () => document.getElementById('messages');

  /** The highest message seq on the page: a reconnecting socket asks for what came after it. */
  function lastSeq() {
    let max = 0;
    for (const item of messages()?.querySelectorAll('[data-seq]') ?? []) {
      const seq = Number(item.getAttribute('data-seq'));
      if (seq > max) max = seq;
    }
    return max;
  }

  document.addEventListener('htmx:ws:before:connection', (event) => {
    const connection = event.detail?.connection;
    if (!connection?.url) return;
    const url = new URL(connection.url, location.href);
    url.searchParams.set('after', String(lastSeq()));
    connection.url = url.toString();
  });

  // Local times: the server renders UTC; the reader's clock is better.
  const timeFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
  const dateTimeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });
  function localizeTimes(root) {
    for (const element of root.querySelectorAll('time[data-local-time]')) {
      const date = new Date(element.getAttribute('datetime'));
      if (Number.isNaN(date.getTime())) continue;
      element.textContent =
        element.getAttribute('data-local-time') === 'time' || element.hasAttribute('data-countdown')
          ? timeFormat.format(date)
          : dateTimeFormat.format(date);
    }
  }

  function formatRemaining(milliseconds) {
    if (milliseconds <= 0) return 'no time';
    const totalMinutes = Math.floor(milliseconds / 60000);
    if (totalMinutes < 1) return 'less than a minute';
    const hours = Math.floor(totalMinutes / 60);
    const minutes = totalMinutes % 60;
    if (hours === 0) return `${minutes} min`;
    return minutes === 0 ? `${hours} h` : `${hours} h ${minutes} min`;
  }

  function updateCountdowns() {
    for (const element of document.querySelectorAll('time[data-countdown]')) {
      const remaining = element.parentElement?.querySelector('[data-remaining]');
      if (remaining)
        remaining.textContent = formatRemaining(new Date(element.getAttribute('datetime')) - Date.now());
    }
  }

  // Keep the newest message in view when the reader is already near the bottom.
  function nearBottom() {
    const scroller = document.scrollingElement;
    return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 160;
  }
  function scrollToBottom() {
    const list = messages();
    list?.lastElementChild?.scrollIntoView({ block: 'end' });
  }

  // Unseen messages in the title while the tab is hidden.
  const baseTitle = document.title;
  let unseen = 0;
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden) {
      unseen = 0;
      document.title = baseTitle;
    }
  });

  let wasNearBottom = true;
  document.addEventListener('htmx:before:swap', () => {
    wasNearBottom = nearBottom();
  });
  document.addEventListener('htmx:after:swap', () => {
    localizeTimes(document);
    if (wasNearBottom) scrollToBottom();
  });
  document.addEventListener('htmx:ws:after:message:incoming', (event) => {
    const data = event.detail?.message?.data;
    if (typeof data === 'string' && data.includes('message-theirs') && document.hidden) {
      unseen += 1;
      document.title = `(${unseen}) ${baseTitle}`;
    }
  });

  // After a successful send the composer empties (a failed one keeps the text for another try).
  document.addEventListener('htmx:after:request', (event) => {
    const form = event.target;
    if (!(form instanceof HTMLFormElement) || form.id !== 'composer') return;
    const status = event.detail?.ctx?.response?.status ?? 0;
    if (status >= 200 && status < 300) {
      const body = form.querySelector('textarea[name="body"]');
      if (body) body.value = '';
      document.getElementById('notice')?.replaceChildren();
    }
  });

  // Enter sends, Shift+Enter adds a line.
  document.addEventListener('keydown', (event) => {
    const target = event.target;
    if (!(target instanceof HTMLTextAreaElement) || target.id !== 'composer-body') return;
    if (event.key !== 'Enter' || event.shiftKey || event.isComposing) return;
    event.preventDefault();
    if (target.value.trim() !== '') target.form?.requestSubmit();
  });

  document.addEventListener('DOMContentLoaded', () => {
    localizeTimes(document);
    updateCountdowns();
    setInterval(updateCountdowns, 30000);
    if (messages()) scrollToBottom();
  });
})();
