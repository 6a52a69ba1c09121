// repocket admin: the "/" shortcut to the filter box, and the live tail of ByteStreams.
// The pages work without it: both are additions to plain links and forms.
"use strict";

document.addEventListener("keydown", (event) => {
  const typing = event.target.closest && event.target.closest("input, textarea, select, [contenteditable]");
  if (event.key === "/" && !typing && !event.ctrlKey && !event.metaKey && !event.altKey) {
    const box = document.querySelector("[data-filter]");
    if (box) {
      event.preventDefault();
      box.focus();
      box.select();
    }
  }
});

// A tail polls its JSON endpoint for the bytes after the offset it shows, and appends them.
function follow(pre) {
  const status = pre.parentElement.querySelector("[data-tail-status]");
  let offset = Number(pre.dataset.offset || 0);
  let pause = 1000;
  async function poll() {
    if (!document.hidden) {
      try {
        const response = await fetch(`${pre.dataset.tailUrl}?offset=${offset}`, {headers: {"Accept": "application/json"}});
        if (!response.ok) throw new Error(`HTTP ${response.status}`);
        const body = await response.json();
        if (body.length < offset) {  // emptied or replaced: start again from its tail
          offset = 0;
          pre.textContent = "";
        } else if (body.text) {
          const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
          pre.append(body.text);
          offset = body.next;
          if (atEnd) pre.scrollTop = pre.scrollHeight;
        }
        if (status) status.textContent = `Live: ${offset.toLocaleString()} bytes.`;
        pause = body.next < body.length ? 0 : 1000;  // more waiting: read on at once
      } catch (error) {
        if (status) status.textContent = `Live tail paused (${error.message}); retrying.`;
        pause = 5000;
      }
    }
    setTimeout(poll, pause);
  }
  setTimeout(poll, pause);
}

document.querySelectorAll("pre[data-tail-url]").forEach(follow);
const summary = document.getElementById("error-summary");
if (summary) summary.focus();
