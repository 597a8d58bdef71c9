// Every htmx request carries the session's CSRF token, like the forms do.
document.addEventListener("htmx:configRequest", (event) => {
  const token = document.querySelector('meta[name="csrf-token"]');
  if (token) event.detail.headers["X-CSRF-Token"] = token.content;
});

// On a phone a table's rows become cards (style.css): each cell is labelled with its
// column's header, here, so no template has to repeat its headers on every cell.
function labelCells() {
  for (const table of document.querySelectorAll("main table")) {
    const headers = table.tHead ? [...table.tHead.rows[0].cells] : [];
    const names = headers.flatMap((th) => Array(th.colSpan).fill(th.textContent.trim()));
    for (const body of table.tBodies) {
      for (const row of body.rows) {
        let column = 0;
        for (const cell of row.cells) {
          if (cell.tagName === "TD" && cell.colSpan === 1 && names[column]) {
            cell.dataset.label = names[column];
          }
          column += cell.colSpan;
        }
      }
    }
  }
}
labelCells();
document.addEventListener("htmx:load", labelCells); // tables htmx swapped in
