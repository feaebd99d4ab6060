// Starts Swagger UI (/docs) or ReDoc (/redoc) on the element dashboard/apidocs.py rendered.
// Our own file, so the pages' CSP needs no inline script; the libraries come from npm.
(function () {
  "use strict";
  const swagger = document.getElementById("swagger-ui");
  if (swagger && typeof SwaggerUIBundle === "function") {
    window.ui = SwaggerUIBundle({
      url: swagger.dataset.openapiUrl,
      dom_id: "#swagger-ui",
      layout: "BaseLayout",
      presets: [SwaggerUIBundle.presets.apis],
      deepLinking: true,
      showExtensions: true,
      showCommonExtensions: true,
      validatorUrl: null, // never send the schema to swagger.io's online validator
    });
  }
  const redoc = document.getElementById("redoc");
  if (redoc && typeof Redoc === "object") {
    Redoc.init(redoc.dataset.openapiUrl, {}, redoc);
  }
})();
