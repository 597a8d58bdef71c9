// The template editor: CodeMirror over each textarea (line numbers, Jinja highlighting),
// and the problems of a refused save marked at their lines. Without this script the
// textareas work as a plain form.
(() => {
  if (!window.CodeMirror) return;
  CodeMirror.defineMode("jinja2-html", (config) =>
    CodeMirror.overlayMode(CodeMirror.getMode(config, "htmlmixed"), CodeMirror.getMode(config, "jinja2")));
  const editors = {};
  for (const area of document.querySelectorAll("textarea[data-mode]")) {
    editors[area.dataset.part] = CodeMirror.fromTextArea(area, {
      mode: area.dataset.mode, lineNumbers: true, lineWrapping: true, viewportMargin: Infinity,
    });
  }
  let first = null;
  for (const problem of document.querySelectorAll(".problems [data-part][data-line]")) {
    const editor = editors[problem.dataset.part];
    const line = Number(problem.dataset.line) - 1;
    if (!editor || line < 0 || line >= editor.lineCount()) continue;
    editor.addLineClass(line, "wrap", "problem-line");
    editor.addLineClass(line, "gutter", "problem-gutter");
    first = first || { editor, line };
  }
  if (first) {
    first.editor.setCursor({ line: first.line, ch: 0 });
    first.editor.scrollIntoView({ line: first.line, ch: 0 }, 80);
    first.editor.getWrapperElement().scrollIntoView({ block: "center" });
    first.editor.focus();
  }
})();
