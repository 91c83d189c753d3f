// ChittyChattyChat progressive enhancement. Every feature works without this file (forms post,
// pages refresh, the conversation frame reloads itself); with it, the room is live, Enter sends,
// times and day separators are local, partner messages are announced and counted in the title,
// and the theme switch applies at once.
(() => {
  const messages = () => document.getElementById('messages');
  const scroller = () => document.querySelector('.chat-main') ?? document.scrollingElement;

  /**
   * Where a (re)connecting socket resumes: after the highest seq on the page, unless one of the
   * latest messages is missing (live messages can arrive out of order and the socket may drop
   * before the hole is filled): then just before that hole. A seq can also be missing for good (a
   * retried send skips one); asking again from there only re-sends a few, which upsert replaces.
   */
  function lastSeq() {
    const seen = new Set();
    let max = 0;
    for (const item of messages()?.querySelectorAll('[data-seq]') ?? []) {
      const seq = Number(item.getAttribute('data-seq'));
      seen.add(seq);
      if (seq > max) max = seq;
    }
    for (let seq = Math.max(1, max - 50); seq < max; seq++) if (!seen.has(seq)) return seq - 1;
    return max;
  }

  // This page's id, on its socket and on its sends: a message sent here comes back in the send's
  // answer, so the server does not push it down this page's socket as well.
  const tabId = newMessageId();

  // hx-ws fires this before the first connection and before every reconnect; the URL it then
  // opens is connection.url, so the catch-up starts after what the page already shows.
  document.addEventListener('htmx:ws:before:connection', (event) => {
    const connection = event.detail?.connection;
    if (!connection?.url) return;
    const url = new URL(connection.url, location.href);
    url.searchParams.set('after', String(lastSeq()));
    url.searchParams.set('tab', tabId);
    connection.url = url.toString();
  });

  // ---- Connection: the header says so while the live connection is down. --------------------
  // The close codes hx-ws reconnects on; other codes end the connection for good.
  const RECONNECTED_CODES = [1001, 1005, 1006, 1011, 1012, 1013, 1014];
  function showConnection(text) {
    const status = document.getElementById('connection-status');
    if (!status || status.textContent === text) return;
    status.textContent = text;
    status.hidden = text === '';
  }
  /**
   * The chat may have ended (or run out) while this page was cut off, so no socket told it; its
   * reconnects would then be refused at the upgrade, which looks like one more dropped line. A
   * look at the room's own URL settles it: gone or not found, and the page reloads to say so.
   */
  let lastRoomCheck = 0;
  async function checkRoomStillOpen() {
    const now = Date.now();
    if (now - lastRoomCheck < 10000 || !document.getElementById('room')) return;
    lastRoomCheck = now;
    try {
      const response = await fetch(location.pathname, { method: 'HEAD', cache: 'no-store' });
      if (response.status === 404 || response.status === 410) location.reload();
    } catch {
      // No answer: the network or the server is still away; the reconnects go on.
    }
  }
  document.addEventListener('htmx:ws:close', (event) => {
    const code = event.detail?.code;
    // 1000: the chat ended; no code: the page is going away.
    if (code === 1000) {
      setTimeout(chatEnded, 0);
      return;
    }
    if (code == null) return;
    document.getElementById('room')?.classList.add('connection-lost');
    showConnection(RECONNECTED_CODES.includes(code) ? 'Reconnecting…' : 'Disconnected: reload the page');
    void checkRoomStillOpen();
  });
  document.addEventListener('htmx:ws:after:connection', () => {
    document.getElementById('room')?.classList.remove('connection-lost');
    showConnection('');
  });

  /**
   * The chat ended (the server's last frame replaced the composer and closed with 1000). Said in
   * the notice area, a live region that was already on the page (one that arrives with its text
   * is often not read out); the focus, if it was in what went away, goes to "Start a new one".
   */
  function chatEnded() {
    showNotice('This chat has ended', 'Messages can no longer be sent or read here.', 'info');
    if (document.activeElement === document.body || !document.activeElement?.isConnected) {
      document.querySelector('.chat-ended a')?.focus();
    }
  }

  // ---- Times: the server renders UTC; the reader's clock and time zone are better. ----------
  // The same style as the time in dateTimeFormat (2:47 PM, or 14:47), so no two times on a page differ.
  const timeFormat = new Intl.DateTimeFormat(undefined, { timeStyle: 'short' });
  const dateTimeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });
  const dayFormat = new Intl.DateTimeFormat(undefined, { weekday: 'long', day: 'numeric', month: 'long' });
  const dayYearFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'long' });

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

  const localDayKey = (date) => `${date.getFullYear()}-${date.getMonth() + 1}-${date.getDate()}`;

  function dayLabel(date) {
    const today = new Date();
    const yesterday = new Date(today.getFullYear(), today.getMonth(), today.getDate() - 1);
    if (localDayKey(date) === localDayKey(today)) return 'Today';
    if (localDayKey(date) === localDayKey(yesterday)) return 'Yesterday';
    return (date.getFullYear() === today.getFullYear() ? dayFormat : dayYearFormat).format(date);
  }

  const isoDay = (date) =>
    `${date.getFullYear()}-${String(date.getMonth() + 1).padStart(2, '0')}-${String(date.getDate()).padStart(2, '0')}`;

  /**
   * Day separators live inside the first message of each day (so the list stays ordered by
   * data-seq alone). The server puts one where the day changes in its own time zone, and none in
   * a message it pushes or answers a send with; which message is first depends on the reader's
   * time zone, so it is decided here for every message, whatever order they arrived in.
   */
  function labelDays() {
    let previous = null;
    for (const item of messages()?.querySelectorAll('li[data-seq]') ?? []) {
      const stamp = item.querySelector('.message-meta time')?.getAttribute('datetime');
      if (!stamp) continue;
      const date = new Date(stamp);
      const key = localDayKey(date);
      let divider = item.querySelector('.day-divider');
      if (key === previous) {
        if (divider) divider.hidden = true;
      } else {
        if (!divider) {
          divider = document.createElement('p');
          divider.className = 'day-divider';
          divider.append(document.createElement('time'));
          item.prepend(divider);
        }
        divider.hidden = false;
        const time = divider.querySelector('time');
        const text = dayLabel(date);
        const day = isoDay(date);
        if (time && time.textContent !== text) time.textContent = text;
        if (time && time.getAttribute('datetime') !== day) time.setAttribute('datetime', day);
      }
      previous = key;
    }
  }

  // ---- Scrolling: keep the newest message in view while the reader is at the bottom. ---------
  let atBottom = true;
  const distanceFromBottom = (element) => element.scrollHeight - element.scrollTop - element.clientHeight;
  function scrollToBottom() {
    const element = scroller();
    if (element) element.scrollTop = element.scrollHeight;
    atBottom = true;
  }

  // ---- Attention: partner messages are announced once, and counted in the title when hidden. ---
  const baseTitle = document.title;
  let unseen = 0;
  function resetUnseen() {
    if (document.hidden) return;
    unseen = 0;
    document.title = baseTitle;
  }
  document.addEventListener('visibilitychange', resetUnseen);
  window.addEventListener('focus', resetUnseen);

  function announceText(text) {
    const announcer = document.getElementById('announcer');
    if (!announcer) return;
    const line = document.createElement('p');
    line.textContent = text;
    announcer.append(line);
    while (announcer.childElementCount > 5) announcer.firstElementChild?.remove();
  }

  function announce(item) {
    const sender = item.querySelector('.message-sender')?.textContent?.trim() || 'Your partner';
    const text = item.querySelector('.message-text')?.textContent?.trim() ?? '';
    announceText(
      item.querySelector('.message-image')
        ? `${sender} sent an image${text ? `: ${text}` : ''}`
        : `${sender}: ${text}`,
    );
  }

  /** Messages already shown. Anything else added to the list is new (the socket and a send's
   * response may both bring the same message; a reconnect may bring it again: counted once). */
  const known = new Set();
  function onMessagesAdded(records) {
    const fresh = [];
    for (const record of records) {
      for (const node of record.addedNodes) {
        if (!(node instanceof HTMLElement) || !node.matches('li[data-seq]')) continue;
        const seq = node.getAttribute('data-seq');
        if (known.has(seq)) continue;
        known.add(seq);
        fresh.push(node);
      }
    }
    labelDays();
    if (fresh.length === 0) return;
    const mineAdded = fresh.some((item) => item.classList.contains('message-mine'));
    for (const item of fresh) {
      localizeTimes(item);
      if (!item.classList.contains('message-theirs')) continue;
      announce(item);
      if (document.hidden) unseen += 1;
    }
    if (unseen > 0 && document.hidden) document.title = `(${unseen}) ${baseTitle}`;
    if (mineAdded || atBottom) scrollToBottom();
  }

  // ---- Composer: Enter sends, Shift+Enter adds a line, the box grows with its text. -----------
  const composerBody = () => document.getElementById('composer-body');
  const growsByItself = typeof CSS !== 'undefined' && CSS.supports?.('field-sizing', 'content');
  function fitComposer() {
    const body = composerBody();
    if (!body || growsByItself) return;
    // CSSOM, not a style attribute: allowed under the strict CSP.
    body.style.height = 'auto';
    body.style.height = `${Math.min(body.scrollHeight + 2, 160)}px`;
  }

  // "is typing" goes to the partner when typing starts and at most every 2 s while it goes on,
  // never after the message has left (htmx's own throttle fires once more at the end of its
  // window, which showed "is typing…" again seconds after each message).
  const TYPING_SIGNAL_MS = 2000;
  let lastTypingSignal = 0;
  document.addEventListener('input', (event) => {
    const target = event.target;
    if (!(target instanceof HTMLTextAreaElement) || target.id !== 'composer-body') return;
    fitComposer();
    const now = Date.now();
    if (target.value.trim() === '' || now - lastTypingSignal < TYPING_SIGNAL_MS) return;
    lastTypingSignal = now;
    document.getElementById('typing-signal')?.dispatchEvent(new CustomEvent('composer-typing'));
  });

  document.addEventListener('keydown', (event) => {
    const target = event.target;
    if (!(target instanceof HTMLTextAreaElement) || target.id !== 'composer-body') return;
    if (event.key !== 'Enter' || event.shiftKey || event.isComposing) return;
    event.preventDefault();
    if (target.value.trim() !== '') target.form?.requestSubmit();
  });

  const isComposer = (event) => event.target instanceof HTMLFormElement && event.target.id === 'composer';
  const composerMessageId = () => document.querySelector('#composer input[name="client_msg_id"]');

  /**
   * The box empties the moment a message leaves, as in any messenger: what is typed next is the
   * next message, and a second tap on Send finds the box empty (it is `required`) and sends
   * nothing. Sends queue behind each other (hx-sync "queue all"), so none is dropped and they are
   * stored in the order they were sent. Each takes the form's message id, and the form gets a
   * fresh one at once: a second message sent while the first is on its way is another message.
   */
  document.addEventListener('htmx:config:request', (event) => {
    if (!isComposer(event)) return;
    const ctx = event.detail?.ctx;
    const sent = ctx?.request?.body;
    if (!ctx || !(sent instanceof FormData)) return;
    if (ctx.request.headers) ctx.request.headers['X-Tab-Id'] = tabId;
    ctx.sentText = String(sent.get('body') ?? '');
    ctx.sentId = String(sent.get('client_msg_id') ?? '');
    const body = composerBody();
    if (body && body.value === ctx.sentText) {
      body.value = '';
      fitComposer();
    }
    lastTypingSignal = 0;
    const id = composerMessageId();
    if (id) id.value = newMessageId();
  });

  /** A send that failed puts its text back in the box, ahead of anything typed since. */
  function putBack(ctx, { sameId }) {
    const body = composerBody();
    if (!body || !ctx?.sentText) return;
    const typedSince = body.value;
    body.value = typedSince.trim() === '' ? ctx.sentText : `${ctx.sentText}\n${typedSince}`;
    // Sent again unchanged, it carries its own id: if the first try was stored after all (no
    // answer came), it is stored once.
    const id = composerMessageId();
    if (sameId && id && ctx.sentId && typedSince.trim() === '') id.value = ctx.sentId;
    fitComposer();
  }

  document.addEventListener('htmx:after:request', (event) => {
    if (!isComposer(event)) return;
    const ctx = event.detail?.ctx;
    const status = ctx?.response?.status ?? 0;
    if (status >= 200 && status < 300) document.getElementById('notice')?.replaceChildren();
    // Refused (too long, the chat ended, too many at once): nothing was stored; the server's
    // notice says why.
    else if (status >= 400) putBack(ctx, { sameId: false });
  });
  document.addEventListener('htmx:error', (event) => {
    const ctx = event.detail?.ctx;
    if (!isComposer(event) || !ctx || ctx.response) return;
    putBack(ctx, { sameId: true });
    showNotice('Not sent', 'The server could not be reached. Your message is back in the box; try again.');
  });

  function showNotice(title, message, tone = 'error') {
    const notice = document.getElementById('notice');
    if (!notice) return;
    const box = document.createElement('div');
    box.className = `notice notice-${tone}`;
    const heading = document.createElement('p');
    heading.className = 'notice-title';
    heading.textContent = title;
    const text = document.createElement('p');
    text.textContent = message;
    box.append(heading, text);
    notice.replaceChildren(box);
  }

  // A notice floats over the top of the page: each one gets a button that puts it away.
  function addDismissButtons() {
    const area = document.getElementById('notice');
    const notice = area?.querySelector('.notice');
    if (!area || !notice || notice.querySelector('.notice-dismiss')) return;
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'notice-dismiss';
    button.setAttribute('aria-label', 'Dismiss');
    button.textContent = '×';
    button.addEventListener('click', () => {
      area.replaceChildren();
      // The button is gone with its notice: the focus goes on where the reader was working.
      (composerBody() ?? document.getElementById('main'))?.focus();
    });
    notice.prepend(button);
  }

  /**
   * The partner's line is replaced from the socket: say who joined, came back or went away in
   * the polite announcer (the line itself is not a live region: it is replaced, not changed), and
   * name them in the conversation's label.
   */
  function partnerState(line) {
    const name = line?.querySelector('strong')?.textContent?.trim() ?? '';
    const presence = line?.querySelector('.presence');
    return { name, online: presence?.classList.contains('presence-online') ?? false, known: !!presence };
  }
  let partnerBefore = null;
  function onPartnerLine() {
    const line = document.getElementById('partner-status');
    const now = partnerState(line);
    const before = partnerBefore;
    partnerBefore = now;
    if (!before || !now.known) return;
    const main = document.getElementById('main');
    if (now.name && main?.classList.contains('chat-main'))
      main.setAttribute('aria-label', `Conversation with ${now.name}`);
    let text = '';
    if (!before.name && now.name) text = `${now.name} joined`;
    else if (before.known && now.online !== before.online)
      text = `${now.name} is ${now.online ? 'online' : 'away'}`;
    if (text) announceText(text);
  }

  // ---- Theme: the form works without JS; here it applies at once and is remembered in the
  // background (204), with the plain form as the fallback when that fails. ---------------------
  function applyTheme(theme) {
    document.documentElement.setAttribute('data-theme', theme);
    const scheme = theme === 'system' ? 'light dark' : theme;
    document.querySelector('meta[name="color-scheme"]')?.setAttribute('content', scheme);
    for (const button of document.querySelectorAll('[data-theme-switch] button[name="theme"]')) {
      button.setAttribute('aria-pressed', String(button.value === theme));
    }
  }
  document.addEventListener('submit', async (event) => {
    const form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.hasAttribute('data-theme-switch')) return;
    const submitter = event.submitter;
    if (form.dataset.plain || !(submitter instanceof HTMLButtonElement)) return;
    event.preventDefault();
    const theme = submitter.value;
    applyTheme(theme);
    const fields = new URLSearchParams({ theme, return_to: location.pathname + location.search });
    try {
      const get = form.method.toLowerCase() === 'get';
      const response = await fetch(get ? `${form.action}?${fields}` : form.action, {
        method: get ? 'GET' : 'POST',
        headers: { 'HX-Request': 'true' },
        ...(get ? {} : { body: fields }),
      });
      if (!response.ok) throw new Error(`theme not saved: ${response.status}`);
    } catch {
      form.dataset.plain = 'true';
      form.requestSubmit(submitter);
    }
  });

  // ---- Copy the share link (only where the clipboard is available). --------------------------
  document.addEventListener('click', async (event) => {
    const button = event.target instanceof Element ? event.target.closest('[data-copy-text]') : null;
    if (!button) return;
    try {
      await navigator.clipboard.writeText(button.getAttribute('data-copy-text'));
      button.textContent = 'Link copied';
    } catch {
      button.textContent = 'Copy failed: select the link';
    }
  });

  document.addEventListener('htmx:after:swap', () => localizeTimes(document));

  document.addEventListener('DOMContentLoaded', () => {
    localizeTimes(document);
    updateCountdowns();
    const partnerLine = document.getElementById('partner-status');
    if (partnerLine?.parentElement) {
      partnerBefore = partnerState(partnerLine);
      new MutationObserver(onPartnerLine).observe(partnerLine.parentElement, { childList: true });
    }
    const noticeArea = document.getElementById('notice');
    if (noticeArea) {
      addDismissButtons();
      new MutationObserver(addDismissButtons).observe(noticeArea, { childList: true });
    }
    setInterval(() => {
      updateCountdowns();
      labelDays();
    }, 30000);
    if (navigator.clipboard) {
      for (const button of document.querySelectorAll('[data-copy-text]')) button.hidden = false;
    }
    const list = messages();
    if (!list) return;
    for (const item of list.querySelectorAll('li[data-seq]')) known.add(item.getAttribute('data-seq'));
    labelDays();
    new MutationObserver(onMessagesAdded).observe(list, { childList: true });
    const element = scroller();
    element.addEventListener('scroll', () => {
      atBottom = distanceFromBottom(element) < 80;
    });
    // The on-screen keyboard shrinks the conversation: stay at the bottom if we were there.
    new ResizeObserver(() => {
      if (atBottom) scrollToBottom();
    }).observe(element);
    scrollToBottom();
    fitComposer();
  });

  // -------------------------------------------------------------------------------------------
  // Image uploads. Without this block the upload form posts and the page comes back (303). With
  // it: the file size is checked before sending, a progress bar follows the upload, the form
  // empties after a successful send, and an image dropped on the conversation or pasted is sent
  // through the same form once the user confirms.
  // -------------------------------------------------------------------------------------------
  const uploadForm = () => document.getElementById('upload-form');
  const ACCEPTED = /^image\/(jpeg|png|webp|gif)$/;

  function formatSize(bytes) {
    return bytes < 1024 * 1024
      ? `${Math.max(1, Math.round(bytes / 1024))} KB`
      : `${(bytes / 1048576).toFixed(1)} MB`;
  }

  /** True when the file may be sent; otherwise says why, without sending anything. */
  function acceptable(form, file) {
    const max = Number(form.dataset.maxBytes);
    if (max > 0 && file.size > max) {
      showNotice(
        'Image too large',
        `An image can be at most ${form.dataset.maxLabel}; this one is ${formatSize(file.size)}.`,
      );
      return false;
    }
    return true;
  }

  // fetch() cannot report upload progress; XMLHttpRequest can. htmx 4 lets a request use its own
  // fetch (ctx.fetch), so the upload form's requests go through this one.
  function fetchWithUploadProgress(onProgress) {
    return (url, init) =>
      new Promise((resolve, reject) => {
        const xhr = new XMLHttpRequest();
        xhr.open(init.method ?? 'POST', url);
        for (const [name, value] of Object.entries(init.headers ?? {})) xhr.setRequestHeader(name, value);
        xhr.responseType = 'text';
        xhr.upload.addEventListener('progress', (event) => {
          if (event.lengthComputable) onProgress(event.loaded / event.total);
        });
        xhr.addEventListener('load', () => {
          const headers = new Headers();
          for (const line of xhr.getAllResponseHeaders().trim().split(/\r?\n/)) {
            const colon = line.indexOf(':');
            if (colon > 0) headers.append(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
          }
          const empty = xhr.status === 204 || xhr.status === 304;
          try {
            resolve(new Response(empty ? null : xhr.responseText, { status: xhr.status, headers }));
          } catch (error) {
            reject(error);
          }
        });
        xhr.addEventListener('error', () => reject(new TypeError('The upload failed (network error).')));
        xhr.addEventListener('abort', () =>
          reject(new DOMException('The upload was stopped.', 'AbortError')),
        );
        init.signal?.addEventListener('abort', () => xhr.abort());
        xhr.send(init.body);
      });
  }

  /** A version 4 uuid, also where crypto.randomUUID is missing (plain HTTP on a LAN). */
  function newMessageId() {
    if (crypto.randomUUID) return crypto.randomUUID();
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    const hex = [...bytes].map((byte) => byte.toString(16).padStart(2, '0')).join('');
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
  }

  document.addEventListener('htmx:config:request', (event) => {
    const form = event.target;
    if (form !== uploadForm()) return;
    const file = form.querySelector('input[type="file"]')?.files?.[0];
    if (file && !acceptable(form, file)) {
      event.preventDefault();
      return;
    }
    // This upload took the form's message id with it. An image dropped or pasted before its answer
    // (and the next id) arrives is another message: with the same id it would be taken for a retry
    // of this one and dropped.
    const id = form.querySelector('input[name="client_msg_id"]');
    if (id) id.value = newMessageId();
    // Noted now: htmx disables the button (hx-disable) before htmx:before:request, and a browser
    // that drops the focus from a disabled element (Chromium 150 does, at once) has already moved
    // it to the page by then.
    form.dataset.focusWasInside = String(form.contains(document.activeElement));
  });

  document.addEventListener('htmx:before:request', (event) => {
    const form = event.target;
    if (form !== uploadForm()) return;
    const progress = form.querySelector('progress');
    if (progress) {
      progress.value = 0;
      progress.hidden = false;
    }
    document.getElementById('notice')?.replaceChildren();
    event.detail.ctx.fetch = fetchWithUploadProgress((fraction) => {
      if (progress) progress.value = Math.round(fraction * 100);
    });
  });

  // No answer at all (network down): the image may have been stored. Trying again with its id
  // stores it at most once.
  document.addEventListener('htmx:error', (event) => {
    const form = event.target;
    const sent = event.detail?.ctx?.request?.body;
    if (form !== uploadForm() || !(sent instanceof FormData) || event.detail?.ctx?.response) return;
    const id = form.querySelector('input[name="client_msg_id"]');
    if (id && sent.get('client_msg_id')) id.value = String(sent.get('client_msg_id'));
  });

  document.addEventListener('htmx:finally:request', (event) => {
    const form = event.target;
    if (form !== uploadForm()) return;
    const progress = form.querySelector('progress');
    if (progress) progress.hidden = true;
    const status = event.detail?.ctx?.response?.status ?? 0;
    if (status >= 200 && status < 300) {
      // The new message id arrived out of band; keep it while emptying the rest.
      for (const input of form.querySelectorAll('input[type="file"], input[type="text"]')) input.value = '';
      // Sent: the panel folds again, so a phone's conversation gets its room back.
      const panel = form.closest('details');
      if (panel) panel.open = false;
    }
    // The focus was in the form when it was sent: keep it there for a keyboard user. A folded panel
    // hides the caption field (the browser lets go of a hidden field's focus at its next frame), so
    // it goes to the panel's toggle; otherwise back to the button, whose disabling took it away.
    if (form.dataset.focusWasInside === 'true') {
      const panel = form.closest('details');
      if (panel?.open === false) panel.querySelector('summary')?.focus();
      else if (!form.contains(document.activeElement)) {
        const button = form.querySelector('button[type="submit"]');
        // After htmx has enabled the button again (it does so right after this event).
        setTimeout(() => button?.focus(), 0);
      }
    }
    delete form.dataset.focusWasInside;
  });

  /** A dropped or pasted image goes through the upload form, after the user says yes. */
  function offer(file) {
    const form = uploadForm();
    const input = form?.querySelector('input[type="file"]');
    if (!form || !input) return;
    if (!ACCEPTED.test(file.type)) {
      showNotice('Not an image we accept', 'Only JPEG, PNG, WebP and GIF images can be sent.');
      return;
    }
    if (!acceptable(form, file)) return;
    const name = file.name && file.name !== 'image.png' ? `“${file.name}”` : 'this image';
    if (!window.confirm(`Send ${name} (${formatSize(file.size)}) to your partner?`)) return;
    const transfer = new DataTransfer();
    transfer.items.add(file);
    input.files = transfer.files;
    form.requestSubmit();
  }

  const carriesFiles = (event) => [...(event.dataTransfer?.types ?? [])].includes('Files');
  const dropZone = () => document.querySelector('.chat-main');

  document.addEventListener('dragover', (event) => {
    if (!uploadForm() || !carriesFiles(event) || !dropZone()?.contains(event.target)) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = 'copy';
    dropZone()?.classList.add('drop-target');
  });
  document.addEventListener('dragleave', (event) => {
    if (event.target === dropZone()) dropZone()?.classList.remove('drop-target');
  });
  document.addEventListener('drop', (event) => {
    dropZone()?.classList.remove('drop-target');
    if (!uploadForm() || !carriesFiles(event) || !dropZone()?.contains(event.target)) return;
    event.preventDefault();
    const file = event.dataTransfer.files[0];
    if (file) offer(file);
  });
  document.addEventListener('paste', (event) => {
    const file = [...(event.clipboardData?.files ?? [])][0];
    if (!uploadForm() || !file) return;
    // Text copied from some apps carries a picture of itself too: into a text field, paste the text.
    const typing = event.target instanceof HTMLTextAreaElement || event.target instanceof HTMLInputElement;
    if (typing && event.clipboardData.types.includes('text/plain')) return;
    event.preventDefault();
    offer(file);
  });
})();
