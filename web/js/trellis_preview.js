// ComfyUI extension: 3D preview widget (GLB mesh + Gaussian splat) for TRELLIS nodes.
//
// A node of this pack (its python_module is "custom_nodes.<this pack's folder>", the folder ComfyUI
// serves this file from: /extensions/<folder>/js/) that returns
//   {"ui": {"trellis_preview": [{"mesh": {filename, subfolder, type} | null,
//                                "splat": {filename, subfolder, type} | null,
//                                "splat_format": "ply" | "spz" | "splat",
//                                "edit_boxes": [{"min": [x,y,z], "max": [x,y,z]}, ...]}]}}
// gets a viewer widget. Output nodes get it when created, others on their first such result.
// The viewer (three.js + Spark, bundled, no network) is loaded on first use from
// ./trellis_viewer.mjs (.mjs so the front end does not import it as an extension).
// Works with the 2025 (1.27) and 2026 (1.45) front ends: it only uses app.registerExtension,
// nodeType.prototype.onNodeCreated / onExecuted / onRemoved and node.addDOMWidget.
import { app } from "../../../scripts/app.js";

const VIEWER_MODULE_URL = new URL("./trellis_viewer.mjs", import.meta.url).href;
const WIDGET_NAME = "trellis_preview";
const MIN_HEIGHT = 320;
let viewerModule = null;
const loadViewerModule = () => (viewerModule ??= import(VIEWER_MODULE_URL));
// Bound by module, not by name: other packs' and core "Trellis*" nodes (e.g. Trellis2*) are left alone.
const PACK = decodeURIComponent(new URL(import.meta.url).pathname.split("/extensions/")[1]?.split("/")[0] ?? "");
const isPackNode = (nodeData) => {
  const module = String(nodeData?.python_module ?? "");
  return PACK !== "" && (module === `custom_nodes.${PACK}` || module === PACK);
};

function viewUrl(file) {
  if (!file || !file.filename) return null;
  const q = new URLSearchParams({ filename: file.filename, subfolder: file.subfolder || "", type: file.type || "output" });
  const route = `/view?${q}`;
  const api = app.api;
  if (api && typeof api.apiURL === "function") return api.apiURL(route);
  return `/api${route}`;
}

function splatFormat(item) {
  if (item.splat_format) return String(item.splat_format).toLowerCase();
  const m = /\.([a-z0-9]+)$/i.exec(item.splat?.filename || "");
  return m ? m[1].toLowerCase() : "ply";
}

function el(tag, props = {}, style = "") {
  const e = Object.assign(document.createElement(tag), props);
  if (style) e.style.cssText = style;
  return e;
}

function createPreviewWidget(node) {
  const existing = node.widgets?.find((w) => w.name === WIDGET_NAME);
  if (existing) return existing.trellis;
  node.properties = node.properties || {};
  const state = {
    mode: node.properties.trellis_preview_mode || "mesh",
    background: node.properties.trellis_preview_background || "#2a2a2a",
    viewer: null, viewerPromise: null, last: null, disposed: false,
  };

  const root = el("div", { className: "trellis-preview" },
    "display:flex;flex-direction:column;width:100%;height:100%;min-height:" + MIN_HEIGHT + "px;" +
    "box-sizing:border-box;background:#1b1b1b;border-radius:6px;overflow:hidden;font:12px sans-serif;color:#ddd;");
  const bar = el("div", {}, "display:flex;gap:6px;align-items:center;padding:4px 6px;flex:0 0 auto;");
  const modeSel = el("select", { title: "What to show" }, "background:#333;color:#ddd;border:1px solid #555;border-radius:4px;");
  for (const [v, t] of [["mesh", "mesh"], ["splat", "splat"], ["side_by_side", "side by side"]])
    modeSel.appendChild(el("option", { value: v, textContent: t, selected: v === state.mode }));
  const resetBtn = el("button", { textContent: "reset view", title: "Frame the asset" },
    "background:#333;color:#ddd;border:1px solid #555;border-radius:4px;cursor:pointer;");
  const bgInput = el("input", { type: "color", value: state.background, title: "Background colour" },
    "width:28px;height:20px;padding:0;border:none;background:none;");
  const status = el("span", { textContent: "run the node to preview" }, "opacity:0.7;margin-left:auto;white-space:nowrap;overflow:hidden;text-overflow:ellipsis;");
  bar.append(modeSel, resetBtn, bgInput, status);
  const view = el("div", {}, "position:relative;flex:1 1 auto;min-height:0;");
  root.append(bar, view);
  // Keep mouse / wheel input for the orbit controls instead of the graph canvas.
  for (const type of ["pointerdown", "pointermove", "pointerup", "wheel", "contextmenu", "dblclick", "keydown"])
    view.addEventListener(type, (e) => e.stopPropagation());

  function ensureViewer() {
    if (!state.viewerPromise) {
      state.viewerPromise = loadViewerModule().then((mod) => {
        if (state.disposed) return null;
        state.viewer = mod.createTrellisViewer(view, { background: state.background, mode: state.mode });
        return state.viewer;
      });
    }
    return state.viewerPromise;
  }

  modeSel.addEventListener("change", () => {
    state.mode = node.properties.trellis_preview_mode = modeSel.value;
    state.viewer?.setMode(state.mode);
  });
  resetBtn.addEventListener("click", () => state.viewer?.resetView());
  bgInput.addEventListener("input", () => {
    state.background = node.properties.trellis_preview_background = bgInput.value;
    state.viewer?.setBackground(state.background);
  });

  state.show = async (item) => {
    state.last = item;
    const mesh = viewUrl(item.mesh);
    const splat = viewUrl(item.splat);
    if (!mesh && !splat) { status.textContent = "nothing to preview"; return; }
    status.textContent = "loading…";
    try {
      const viewer = await ensureViewer();
      if (!viewer || state.last !== item) return;
      await viewer.load({ mesh, splat, meshFormat: "glb", splatFormat: splatFormat(item) });
      viewer.setMode(state.mode);
      viewer.setEditBoxes(item.edit_boxes || []);
      status.textContent = [item.mesh?.filename, item.splat?.filename].filter(Boolean).join(" + ");
      status.title = status.textContent;
    } catch (err) {
      console.warn("[trellis.preview] load failed", err);
      status.textContent = `preview failed: ${err?.message || err}`;
    }
  };
  state.dispose = () => {
    state.disposed = true;
    state.viewer?.dispose();
    state.viewer = null;
  };

  const widget = node.addDOMWidget(WIDGET_NAME, "preview", root, {
    serialize: false,
    hideOnZoom: false,
    getMinHeight: () => MIN_HEIGHT,
    getHeight: () => MIN_HEIGHT,
  });
  widget.trellis = state;
  widget.serializeValue = () => undefined;
  const size = node.computeSize ? node.computeSize() : [400, MIN_HEIGHT + 60];
  node.setSize?.([Math.max(node.size?.[0] || 0, 400, size[0]), Math.max(node.size?.[1] || 0, size[1])]);
  node.setDirtyCanvas?.(true, true);
  return state;
}

app.registerExtension({
  name: "trellis.preview",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!isPackNode(nodeData)) return;

    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const r = onNodeCreated?.apply(this, arguments);
      if (nodeData.output_node) {
        try { createPreviewWidget(this); } catch (e) { console.warn("[trellis.preview]", e); }
      }
      return r;
    };

    // A saved workflow's size is applied after onNodeCreated; one smaller than the widgets (older
    // workflows saved 315 x 130) would put the preview over them, so it is grown to fit.
    const onConfigure = nodeType.prototype.onConfigure;
    nodeType.prototype.onConfigure = function () {
      const r = onConfigure?.apply(this, arguments);
      if (nodeData.output_node && this.computeSize && this.setSize) {
        const min = this.computeSize();
        this.setSize([Math.max(this.size?.[0] || 0, 400, min[0]), Math.max(this.size?.[1] || 0, min[1])]);
      }
      return r;
    };

    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      const r = onExecuted?.apply(this, arguments);
      const items = output?.trellis_preview;
      if (Array.isArray(items) && items.length && items[0]) {
        try { createPreviewWidget(this).show(items[0]); } catch (e) { console.warn("[trellis.preview]", e); }
      }
      return r;
    };

    const onRemoved = nodeType.prototype.onRemoved;
    nodeType.prototype.onRemoved = function () {
      this.widgets?.find((w) => w.name === WIDGET_NAME)?.trellis?.dispose();
      return onRemoved?.apply(this, arguments);
    };
  },
});
