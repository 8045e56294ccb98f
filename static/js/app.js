/* ReviewDesk's own behaviour, served as a file: the Content-Security-Policy allows no inline
   script, no inline event handler (onclick=...) and no eval, so pages mark elements with data
   attributes and this file attaches the behaviour. */
"use strict";

/* A polling element marked data-poll-when-idle (the review queue) skips a refresh while the
   reader is using a control on the page, so a refresh never swaps a link or field away under
   them. (Before the CSP this was an htmx trigger filter, which htmx runs through Function().) */
document.addEventListener("htmx:beforeRequest", function (event) {
  var elt = event.detail && event.detail.elt;
  if (elt && elt.hasAttribute("data-poll-when-idle") && document.activeElement && document.activeElement !== document.body) {
    event.preventDefault();
  }
});

/* A button marked data-print prints the page (the evidence page). */
document.addEventListener("click", function (event) {
  var button = event.target.closest && event.target.closest("[data-print]");
  if (button) {
    event.preventDefault();
    window.print();
  }
});
