// Keyboard shortcuts of the approval inbox; every action also works with the mouse and
// without this file. Keys are ignored while typing in a field.
(function () {
  "use strict";

  function typing(event) {
    var t = event.target;
    return t instanceof HTMLInputElement || t instanceof HTMLTextAreaElement || t instanceof HTMLSelectElement || (t && t.isContentEditable);
  }

  function rows() {
    return Array.prototype.slice.call(document.querySelectorAll(".approval-row"));
  }

  function select(index) {
    var all = rows();
    if (!all.length) return;
    index = Math.max(0, Math.min(all.length - 1, index));
    all.forEach(function (row, i) { row.classList.toggle("selected", i === index); });
    all[index].scrollIntoView({ block: "nearest" });
    var link = all[index].querySelector(".approval-link");
    if (link) link.focus();
  }

  function selectedIndex() {
    return rows().findIndex(function (row) { return row.classList.contains("selected"); });
  }

  function click(selector) {
    var el = document.querySelector(selector);
    if (el) { el.click(); return true; }
    return false;
  }

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey && event.key === "Enter" && event.target && event.target.id === "id_arguments") {
      event.preventDefault();
      click("#edit-approve-button");
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey || typing(event)) return;
    var key = event.key;
    if (document.getElementById("approval-detail")) {
      if (key === "a") { event.preventDefault(); click("#approve-button"); }
      else if (key === "e") {
        var panel = document.getElementById("edit-panel");
        if (panel) { event.preventDefault(); panel.open = true; document.getElementById("id_arguments").focus(); }
      } else if (key === "r") {
        var comment = document.getElementById("id_reject_comment");
        if (comment) { event.preventDefault(); comment.focus(); }
      } else if (key === "u") { window.location.href = "/approvals/"; }
      return;
    }
    if (document.getElementById("approval-list")) {
      if (key === "j") { event.preventDefault(); select(selectedIndex() + 1); }
      else if (key === "k") { event.preventDefault(); select(selectedIndex() - 1); }
      else if (key === "o" || key === "Enter") {
        var i = selectedIndex();
        if (i >= 0) { event.preventDefault(); rows()[i].querySelector(".approval-link").click(); }
      } else if (key === "d") { click('.approval-tabs [data-key="d"]'); }
      else if (key === "p") { click('.approval-tabs [data-key="p"]'); }
    }
  });
})();
