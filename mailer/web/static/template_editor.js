// The template editor: CodeMirror over each textarea (line numbers, Jinja highlighting),
// kept in sync with its textarea so the live preview (htmx on the form, on "input") posts
// the text as typed; the problems of a refused save or of the preview marked at their
// lines. Without this script the textareas work as a plain form.
(() => {
  if (!window.CodeMirror) return;
  CodeMirror.defineMode("jinja2-html", (config) =>
    CodeMirror.overlayMode(CodeMirror.getMode(config, "htmlmixed"), CodeMirror.getMode(config, "jinja2")));
  const editors = {};
  for (const area of document.querySelectorAll("textarea[data-mode]")) {
    const editor = CodeMirror.fromTextArea(area, {
      mode: area.dataset.mode, lineNumbers: true, lineWrapping: true, viewportMargin: Infinity,
    });
    // the editor types into a textarea of its own: give it the name the page's label gives
    const label = document.querySelector(`label[for="${area.id}"]`);
    editor.getInputField().setAttribute("aria-label", label ? label.textContent.trim() : area.name);
    editor.on("change", () => {
      editor.save();
      area.dispatchEvent(new Event("input", { bubbles: true }));
    });
    editors[area.dataset.part] = editor;
  }

  let marked = [];
  // Marks the lines that `selector`'s problems name, after clearing the last ones; returns the first.
  const mark = (selector) => {
    for (const { editor, handle } of marked) {
      editor.removeLineClass(handle, "wrap", "problem-line");
      editor.removeLineClass(handle, "gutter", "problem-gutter");
    }
    marked = [];
    for (const problem of document.querySelectorAll(selector)) {
      const editor = editors[problem.dataset.part];
      const line = Number(problem.dataset.line) - 1;
      if (!editor || line < 0 || line >= editor.lineCount()) continue;
      const handle = editor.addLineClass(line, "wrap", "problem-line");
      editor.addLineClass(handle, "gutter", "problem-gutter");
      marked.push({ editor, handle, line });
    }
    return marked[0];
  };

  const first = mark(".problems [data-part][data-line]");
  if (first) {
    first.editor.setCursor({ line: first.line, ch: 0 });
    first.editor.scrollIntoView({ line: first.line, ch: 0 }, 80);
    first.editor.getWrapperElement().scrollIntoView({ block: "center" });
    first.editor.focus();
  }
  // While typing, the preview's problems are marked without moving the cursor.
  document.body.addEventListener("htmx:afterSwap", (event) => {
    if (event.detail.target.id === "live-preview") mark("#live-preview [data-part][data-line]");
  });
})();
