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

// ---------------------------------------------------------------------------------------------
// Image uploads. Without this block the upload form posts and the page comes back (303). With
// it: the file size is checked before sending, a progress bar follows the upload, the form
// empties after a successful send, and an image dropped on the conversation or pasted is sent
// through the same form once the user confirms.
// ---------------------------------------------------------------------------------------------
(() => {
  const uploadForm = () => document.getElementById('upload-form');
  const ACCEPTED = /^image\/(jpeg|png|webp|gif)$/;

  function showNotice(title, message) {
    const area = document.getElementById('notice');
    if (!area) return;
    const box = document.createElement('div');
    box.className = 'notice notice-error';
    const heading = document.createElement('p');
    heading.className = 'notice-title';
    heading.textContent = title;
    const text = document.createElement('p');
    text.textContent = message;
    box.append(heading, text);
    area.replaceChildren(box);
  }

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
    }
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
