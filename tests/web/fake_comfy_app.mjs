// Stand-in for ComfyUI's /scripts/app.js in the browser test: just enough of `app` and of a
// LiteGraph node for web/js/trellis_preview.js (registerExtension, api.apiURL, addDOMWidget).
export const extensions = [];
export const app = {
  api: { apiURL: (route) => `/api${route}` },
  registerExtension(ext) { extensions.push(ext); },
};
export class FakeNode {
  constructor() { this.widgets = []; this.size = [200, 100]; this.properties = {}; }
  addDOMWidget(name, type, element, options) {
    const host = document.getElementById("nodes");
    const slot = document.createElement("div");
    slot.style.cssText = "width:480px;height:400px;";
    slot.appendChild(element);
    host.appendChild(slot);
    const w = { name, type, element, options, value: undefined };
    this.widgets.push(w);
    return w;
  }
  computeSize() { return [300, 460]; }
  setSize(s) { this.size = s; }
  setDirtyCanvas() {}
}
window.__fakeComfy = { app, extensions, FakeNode };
