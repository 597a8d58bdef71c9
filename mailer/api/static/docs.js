// The API's docs page: Swagger UI over the API's own OpenAPI document. A file, not an
// inline script, so the app's Content-Security-Policy (script-src 'self') holds here too.
window.addEventListener("DOMContentLoaded", () => {
  const root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.openapi,
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null, // the default badge asks a server on the internet about the document
    presets: [SwaggerUIBundle.presets.apis],
  });
});
