// cardwall live update. Every 5 s: fetch this page again and swap in each element marked
// data-live whose content changed. No reload, so the scroll position and a screen reader's place
// stay; the card status is an aria-live region, announced only when it changes. Without
// JavaScript the page refreshes itself (<noscript> meta refresh).
"use strict";
setInterval(async () => {
  try {
    const response = await fetch(location.href, { cache: "no-store" });
    if (!response.ok) throw new Error(response.statusText);
    const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
    for (const part of document.querySelectorAll("[data-live]")) {
      const next = fresh.getElementById(part.id);
      if (next && next.innerHTML !== part.innerHTML) part.innerHTML = next.innerHTML;
    }
    document.title = fresh.title;
    document.body.classList.remove("stale");
  } catch {
    document.body.classList.add("stale");
  }
}, 5000);
