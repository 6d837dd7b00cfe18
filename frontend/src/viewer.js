// TRELLIS preview viewer: three.js (GLB meshes) + Spark (Gaussian splats), bundled by
// frontend/build.mjs into web/js/trellis_viewer.mjs.
//
// Frames: everything is shown in the glTF frame (Y up, metres). A 3DGS PLY and an antimatter15
// .splat are stored in the 3DGS/OpenCV frame (x right, y down, z forward); Spark loads them as
// stored, so they get a 180 degree rotation about X. An .spz is stored in RUB (Y up, three.js)
// and Spark loads it as stored too, so it needs no rotation.
import * as THREE from "three";
import { GLTFLoader } from "three/addons/loaders/GLTFLoader.js";
import { OrbitControls } from "three/addons/controls/OrbitControls.js";
import { SparkRenderer, SplatMesh } from "@sparkjsdev/spark";

export const VERSION = "0.1.0";

/** Rotation (three.js quaternion x, y, z, w) that brings a splat file of `format` into the glTF frame. */
export function splatFrameQuaternion(format) {
  const f = String(format || "ply").toLowerCase();
  if (f === "spz") return new THREE.Quaternion(0, 0, 0, 1); // RUB already
  return new THREE.Quaternion(1, 0, 0, 0); // ply / splat / ksplat: RDF, 180 deg about X
}

const SPARK_FILE_TYPES = { ply: "ply", spz: "spz", splat: "splat", ksplat: "ksplat" };

function disposeObject(root) {
  root.traverse((o) => {
    if (o.geometry) o.geometry.dispose();
    const mats = o.material ? (Array.isArray(o.material) ? o.material : [o.material]) : [];
    for (const m of mats) {
      for (const v of Object.values(m)) if (v && v.isTexture) v.dispose();
      m.dispose();
    }
  });
}

export function createTrellisViewer(container, options = {}) {
  const opts = {
    background: "#2a2a2a",
    mode: "mesh",
    pixelRatio: Math.min(globalThis.devicePixelRatio || 1, 2),
    fov: 40,
    ...options,
  };
  const canvas = document.createElement("canvas");
  canvas.style.cssText = "display:block;width:100%;height:100%;outline:none;touch-action:none;";
  container.appendChild(canvas);

  const renderer = new THREE.WebGLRenderer({ canvas, antialias: false, alpha: false,
    preserveDrawingBuffer: !!opts.preserveDrawingBuffer });
  renderer.setPixelRatio(opts.pixelRatio);
  renderer.outputColorSpace = THREE.SRGBColorSpace;

  const scene = new THREE.Scene();
  const camera = new THREE.PerspectiveCamera(opts.fov, 1, 0.01, 100);
  camera.position.set(0, 0, 3);
  scene.add(camera);
  scene.add(new THREE.HemisphereLight(0xffffff, 0x444444, 1.0));
  const sun = new THREE.DirectionalLight(0xffffff, 1.2);
  sun.position.set(1, 2, 1.5);
  camera.add(sun); // head light, follows the orbit
  scene.add(new THREE.AmbientLight(0xffffff, 0.2));

  const spark = new SparkRenderer({ renderer });
  scene.add(spark);

  const controls = new OrbitControls(camera, canvas);
  controls.enableDamping = true;
  controls.dampingFactor = 0.15;

  // One group per asset kind, each in the glTF frame; side by side shifts them along X.
  const meshGroup = new THREE.Group();
  const splatGroup = new THREE.Group();
  scene.add(meshGroup, splatGroup);
  const boxGroups = [new THREE.Group(), new THREE.Group()];
  meshGroup.add(boxGroups[0]);
  splatGroup.add(boxGroups[1]);

  let meshObject = null;
  let splatObject = null;
  let meshBox = null;
  let splatBox = null;
  let mode = opts.mode;
  let disposed = false;
  let dirtyFrames = 2;
  let loadToken = 0;

  const markDirty = (frames = 30) => { dirtyFrames = Math.max(dirtyFrames, frames); };
  controls.addEventListener("change", () => markDirty(10));

  function setBackground(color) {
    renderer.setClearColor(new THREE.Color(color), 1);
    opts.background = color;
    markDirty();
  }
  setBackground(opts.background);

  function resize() {
    const w = Math.max(1, container.clientWidth | 0);
    const h = Math.max(1, container.clientHeight | 0);
    const c = renderer.domElement;
    if (c.width !== Math.round(w * renderer.getPixelRatio()) || c.height !== Math.round(h * renderer.getPixelRatio())) {
      renderer.setSize(w, h, false);
      camera.aspect = w / h;
      camera.updateProjectionMatrix();
      markDirty();
    }
  }
  const resizeObserver = typeof ResizeObserver !== "undefined" ? new ResizeObserver(resize) : null;
  if (resizeObserver) resizeObserver.observe(container);
  resize();

  function effectiveMode() {
    if (mode === "side_by_side") {
      if (meshObject && splatObject) return "side_by_side";
      return meshObject ? "mesh" : "splat";
    }
    if (mode === "splat" && !splatObject && meshObject) return "mesh";
    if (mode === "mesh" && !meshObject && splatObject) return "splat";
    return mode;
  }

  function layout() {
    const m = effectiveMode();
    meshGroup.visible = !!meshObject && (m === "mesh" || m === "side_by_side");
    splatGroup.visible = !!splatObject && (m === "splat" || m === "side_by_side");
    if (splatObject) splatObject.visible = splatGroup.visible;
    meshGroup.position.set(0, 0, 0);
    splatGroup.position.set(0, 0, 0);
    if (m === "side_by_side") {
      const a = meshBox.getSize(new THREE.Vector3()).x;
      const b = splatBox.getSize(new THREE.Vector3()).x;
      const gap = 0.1 * Math.max(a, b, 1e-3);
      const ca = meshBox.getCenter(new THREE.Vector3()).x;
      const cb = splatBox.getCenter(new THREE.Vector3()).x;
      meshGroup.position.x = -(a / 2 + gap / 2) - ca;
      splatGroup.position.x = (b / 2 + gap / 2) - cb;
    }
    markDirty();
  }

  function visibleBox() {
    const box = new THREE.Box3();
    if (meshGroup.visible && meshBox) box.union(meshBox.clone().translate(meshGroup.position));
    if (splatGroup.visible && splatBox) box.union(splatBox.clone().translate(splatGroup.position));
    if (box.isEmpty()) box.set(new THREE.Vector3(-0.5, -0.5, -0.5), new THREE.Vector3(0.5, 0.5, 0.5));
    return box;
  }

  function resetView() {
    const box = visibleBox();
    const center = box.getCenter(new THREE.Vector3());
    const size = box.getSize(new THREE.Vector3());
    const radius = Math.max(0.5 * size.length(), 1e-3);
    const vfov = THREE.MathUtils.degToRad(camera.fov);
    const hfov = 2 * Math.atan(Math.tan(vfov / 2) * camera.aspect);
    const dist = radius / Math.sin(Math.min(vfov, hfov) / 2) * 0.9;
    const dir = new THREE.Vector3(0.35, 0.3, 1).normalize();
    camera.position.copy(center).addScaledVector(dir, dist);
    camera.near = Math.max(dist / 100, 1e-4);
    camera.far = dist * 100;
    camera.updateProjectionMatrix();
    controls.target.copy(center);
    controls.update();
    markDirty();
  }

  function setMode(m) {
    if (!["mesh", "splat", "side_by_side"].includes(m)) throw new Error(`unknown mode ${m}`);
    mode = m;
    layout();
    resetView();
  }

  function setEditBoxes(boxes) {
    for (const g of boxGroups) {
      disposeObject(g);
      g.clear();
    }
    for (const b of boxes || []) {
      const min = new THREE.Vector3(...b.min);
      const max = new THREE.Vector3(...b.max);
      const size = max.clone().sub(min);
      const center = min.clone().add(max).multiplyScalar(0.5);
      const color = new THREE.Color(b.color || "#ffb000");
      for (const g of boxGroups) {
        const geo = new THREE.BoxGeometry(Math.max(size.x, 1e-6), Math.max(size.y, 1e-6), Math.max(size.z, 1e-6));
        const fill = new THREE.Mesh(geo, new THREE.MeshBasicMaterial({ color, transparent: true,
          opacity: b.opacity ?? 0.18, depthWrite: false, side: THREE.DoubleSide }));
        const edges = new THREE.LineSegments(new THREE.EdgesGeometry(geo),
          new THREE.LineBasicMaterial({ color, transparent: true, opacity: 0.9 }));
        fill.position.copy(center);
        edges.position.copy(center);
        fill.renderOrder = edges.renderOrder = 10;
        g.add(fill, edges);
      }
    }
    markDirty();
  }

  function clearAssets() {
    if (meshObject) {
      meshGroup.remove(meshObject);
      disposeObject(meshObject);
      meshObject = null;
      meshBox = null;
    }
    if (splatObject) {
      splatGroup.remove(splatObject);
      splatObject.dispose();
      splatObject = null;
      splatBox = null;
    }
  }

  async function loadMesh(url) {
    const gltf = await new GLTFLoader().loadAsync(url);
    const root = gltf.scene || gltf.scenes[0];
    root.updateMatrixWorld(true);
    return { object: root, box: new THREE.Box3().setFromObject(root) };
  }

  async function loadSplat(url, format) {
    const fmt = String(format || "ply").toLowerCase();
    const fileType = SPARK_FILE_TYPES[fmt];
    if (!fileType) throw new Error(`unsupported splat format ${format}`);
    const resp = await fetch(url);
    if (!resp.ok) throw new Error(`fetching ${url}: HTTP ${resp.status}`);
    const fileBytes = new Uint8Array(await resp.arrayBuffer());
    const splat = new SplatMesh({ fileBytes, fileType, fileName: `splat.${fmt}` });
    await splat.initialized;
    splat.quaternion.copy(splatFrameQuaternion(fmt));
    splat.updateMatrixWorld(true);
    const local = splat.getBoundingBox(true);
    const box = local.clone().applyMatrix4(new THREE.Matrix4().makeRotationFromQuaternion(splat.quaternion));
    return { object: splat, box };
  }

  async function load({ mesh = null, splat = null, meshFormat = "glb", splatFormat = "ply" } = {}) {
    if (disposed) throw new Error("viewer disposed");
    if (meshFormat && !["glb", "gltf"].includes(String(meshFormat).toLowerCase()))
      throw new Error(`unsupported mesh format ${meshFormat}`);
    const token = ++loadToken;
    const [m, s] = await Promise.all([mesh ? loadMesh(mesh) : null, splat ? loadSplat(splat, splatFormat) : null]);
    if (token !== loadToken || disposed) { // superseded by a later load()
      if (m) disposeObject(m.object);
      if (s) s.object.dispose();
      return viewer;
    }
    clearAssets();
    if (m) { meshObject = m.object; meshBox = m.box; meshGroup.add(meshObject); }
    if (s) { splatObject = s.object; splatBox = s.box; splatGroup.add(splatObject); }
    layout();
    resetView();
    markDirty(splatObject ? 240 : 30);
    await frames(splatObject ? 8 : 2);
    return viewer;
  }

  // Render loop: only while something changed (splat sorting runs asynchronously in Spark's
  // workers, so a loaded splat keeps the loop alive for a few seconds).
  const frameWaiters = [];
  function frames(n) {
    return new Promise((resolve) => frameWaiters.push({ n, resolve }));
  }
  function tick() {
    if (disposed) return;
    const damping = controls.update();
    if (damping) markDirty(2);
    if (dirtyFrames > 0 || frameWaiters.length) {
      resize();
      renderer.render(scene, camera);
      dirtyFrames = Math.max(0, dirtyFrames - 1);
      for (let i = frameWaiters.length - 1; i >= 0; i--) {
        if (--frameWaiters[i].n <= 0) { frameWaiters[i].resolve(); frameWaiters.splice(i, 1); }
      }
    }
  }
  renderer.setAnimationLoop(tick);

  function dispose() {
    if (disposed) return;
    disposed = true;
    renderer.setAnimationLoop(null);
    if (resizeObserver) resizeObserver.disconnect();
    for (const w of frameWaiters.splice(0)) w.resolve();
    controls.dispose();
    clearAssets();
    setEditBoxesNoop();
    scene.remove(spark);
    if (spark.dispose) spark.dispose();
    renderer.dispose();
    if (renderer.forceContextLoss) renderer.forceContextLoss();
    canvas.remove();
  }
  function setEditBoxesNoop() { for (const g of boxGroups) { disposeObject(g); g.clear(); } }

  const viewer = {
    load, setMode, resetView, setBackground, setEditBoxes, dispose,
    get mode() { return mode; },
    get effectiveMode() { return effectiveMode(); },
    get hasMesh() { return !!meshObject; },
    get hasSplat() { return !!splatObject; },
    render: () => markDirty(30),
    renderer, scene, camera, controls,
  };
  return viewer;
}

export { THREE };
