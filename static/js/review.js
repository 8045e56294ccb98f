/* The review page's keyboard shortcuts (templates/workflows/review_detail.html), also loaded on
   the review queue for "n". A file, not inline script: the Content-Security-Policy allows none.
   Every shortcut only does what a visible control does (a button press or moving focus to a
   labelled field), so the page works the same without JavaScript.

   n  next item (submits the "Next item" form)      a  approve (presses the Approve button)
   e  focus the first field of the draft's editor    r  focus the reject reason
   s  focus the send-back feedback                   ?  show the list of shortcuts
   Shortcuts never fire while typing in a field; Esc leaves the field, Ctrl+Enter submits it. */
"use strict";
(function () {
  function isTyping(el) {
    if (!el || !el.tagName) return false;
    var tag = el.tagName.toLowerCase();
    if (tag === "textarea" || tag === "select" || el.isContentEditable) return true;
    if (tag !== "input") return false;
    var type = (el.getAttribute("type") || "text").toLowerCase();
    return ["checkbox", "radio", "button", "submit", "reset", "hidden"].indexOf(type) === -1;
  }

  function byId(id) { return document.getElementById(id); }

  function press(button) {
    if (!button || button.disabled) return false;
    var form = button.form;
    if (form && form.requestSubmit) form.requestSubmit(button); else button.click();
    return true;
  }

  function focusField(el) {
    if (!el) return false;
    el.focus();
    if (el.scrollIntoView) el.scrollIntoView({block: "center"});
    return true;
  }

  function firstEditorField() {
    var editor = byId("editor");
    var field = editor && editor.querySelector("input:not([type=hidden]), textarea, select");
    return field || byId("id_edited_output");
  }

  function openHelp() {
    var dialog = byId("shortcuts");
    if (!dialog || dialog.open) return false;
    if (dialog.showModal) dialog.showModal(); else dialog.setAttribute("open", "");
    var close = byId("shortcuts-close");
    if (close) close.focus();
    return true;
  }

  var actions = {
    n: function () { return press(document.querySelector("form[action$='/review/next/'] button[type=submit]")); },
    a: function () { return press(byId("approve")); },
    e: function () { return focusField(firstEditorField()); },
    r: function () { return focusField(byId("id_reason_code")); },
    s: function () { return focusField(byId("id_feedback")); },
    "?": openHelp
  };

  document.addEventListener("keydown", function (event) {
    if (event.defaultPrevented || event.isComposing) return;
    var dialog = byId("shortcuts");
    if (dialog && dialog.open) return; // the dialog handles its own keys (Esc closes it)
    var target = event.target;
    if (isTyping(target)) {
      if (event.key === "Escape") {
        target.blur();
      } else if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && target.form) {
        // Ctrl+Enter submits the field's own form with its main button.
        var main = target.form.querySelector("button.primary, button.danger, button[type=submit]:last-of-type");
        if (press(main)) event.preventDefault();
      }
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    var action = actions[event.key];
    if (action && action()) event.preventDefault();
  });

  // Marks the page as listening (the browser tests wait for it before pressing keys).
  document.documentElement.setAttribute("data-shortcuts", "on");

  document.addEventListener("DOMContentLoaded", function () {
    var open = byId("shortcuts-open");
    if (open && byId("shortcuts")) {
      open.hidden = false; // only offered where the shortcuts work: with this script
      open.addEventListener("click", openHelp);
    }
  });
})();
