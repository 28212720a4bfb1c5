// The large before/after view of the Segment page: two pictures of one photo, one over
// the other, split by a handle that is dragged (or moved with the arrow keys); the class
// under the pointer is read from each side's train-id mask; hovering a legend entry (or
// clicking it, to keep it) highlights that class. Plain JavaScript, no dependencies.

const views = new WeakMap();

function element(tag, className, parent) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (parent) parent.appendChild(node);
  return node;
}

// Train ids of a grey PNG (data URL) as a Uint8Array, width and height.
function decodeMask(src) {
  return new Promise((resolve) => {
    if (!src) return resolve(null);
    const image = new Image();
    image.onload = () => {
      const canvas = document.createElement("canvas");
      canvas.width = image.naturalWidth;
      canvas.height = image.naturalHeight;
      const context = canvas.getContext("2d", { willReadFrequently: true });
      context.drawImage(image, 0, 0);
      const rgba = context.getImageData(0, 0, canvas.width, canvas.height).data;
      const ids = new Uint8Array(canvas.width * canvas.height);
      for (let i = 0; i < ids.length; i++) ids[i] = rgba[4 * i];
      resolve({ ids, width: canvas.width, height: canvas.height });
    };
    image.onerror = () => resolve(null);
    image.src = src;
  });
}

function build(root) {
  const view = { position: 0.5, pinned: null, hovered: null, masks: [null, null], data: null };
  root.innerHTML = "";
  const labels = element("div", "sv-labels", root);
  view.leftLabel = element("span", "sv-left-label", labels);
  view.rightLabel = element("span", "sv-right-label", labels);
  const stage = element("div", "sv-stage", root);
  stage.setAttribute("data-testid", "before-after");
  view.stage = stage;
  const right = element("div", "sv-layer sv-right", stage);
  view.rightImage = element("img", "", right);
  view.rightImage.alt = "right";
  view.rightCanvas = element("canvas", "", right);
  const left = element("div", "sv-layer sv-left", stage);
  view.leftLayer = left;
  view.leftImage = element("img", "", left);
  view.leftImage.alt = "left";
  view.leftCanvas = element("canvas", "", left);
  const handle = element("div", "sv-handle", stage);
  handle.setAttribute("role", "slider");
  handle.setAttribute("tabindex", "0");
  handle.setAttribute("aria-label", "Before/after split");
  handle.setAttribute("aria-valuemin", "0");
  handle.setAttribute("aria-valuemax", "100");
  view.handle = handle;
  view.tip = element("div", "sv-tip", stage);
  view.readout = element("div", "sv-readout", root);
  view.legend = element("div", "sv-legend", root);

  let dragging = false;
  const fraction = (event) => {
    const box = stage.getBoundingClientRect();
    return Math.min(1, Math.max(0, (event.clientX - box.left) / box.width));
  };
  stage.addEventListener("pointerdown", (event) => {
    dragging = true;
    stage.setPointerCapture(event.pointerId);
    setPosition(view, fraction(event));
    event.preventDefault();
  });
  stage.addEventListener("pointermove", (event) => {
    if (dragging) setPosition(view, fraction(event));
    readPointer(view, event);
  });
  const stop = (event) => {
    dragging = false;
    if (stage.hasPointerCapture(event.pointerId)) stage.releasePointerCapture(event.pointerId);
  };
  stage.addEventListener("pointerup", stop);
  stage.addEventListener("pointercancel", stop);
  stage.addEventListener("pointerleave", () => {
    view.tip.style.display = "none";
    view.readout.textContent = "Point at the picture to read the class under the pointer.";
  });
  handle.addEventListener("keydown", (event) => {
    const steps = { ArrowLeft: -0.02, ArrowDown: -0.02, ArrowRight: 0.02, ArrowUp: 0.02 };
    if (event.key in steps) setPosition(view, view.position + steps[event.key]);
    else if (event.key === "Home") setPosition(view, 0);
    else if (event.key === "End") setPosition(view, 1);
    else return;
    event.preventDefault();
  });
  return view;
}

function setPosition(view, position) {
  view.position = Math.min(1, Math.max(0, position));
  const percent = (100 * view.position).toFixed(1);
  view.leftLayer.style.clipPath = `inset(0 ${(100 - percent).toFixed(1)}% 0 0)`;
  view.handle.style.left = `${percent}%`;
  view.handle.setAttribute("aria-valuenow", String(Math.round(100 * view.position)));
  view.handle.setAttribute("aria-valuetext", `${Math.round(100 * view.position)}% ${view.data.left.label}`);
}

function className(view, mask, x, y) {
  if (!mask) return null;
  const column = Math.min(mask.width - 1, Math.floor(x * mask.width));
  const row = Math.min(mask.height - 1, Math.floor(y * mask.height));
  const id = mask.ids[row * mask.width + column];
  const entry = view.byId.get(id);
  return entry ? entry.name : id === view.data.ignore_index ? "ignored" : "hidden";
}

function readPointer(view, event) {
  const box = view.stage.getBoundingClientRect();
  const x = (event.clientX - box.left) / box.width;
  const y = (event.clientY - box.top) / box.height;
  if (x < 0 || x > 1 || y < 0 || y > 1) return;
  const parts = [];
  const sides = [view.data.left, view.data.right];
  sides.forEach((side, index) => {
    const name = className(view, view.masks[index], x, y);
    if (name) parts.push(`${side.label}: ${name}`);
  });
  view.readout.textContent = parts.length ? `Under the pointer: ${parts.join(" · ")}` : "";
  const here = x < view.position ? 0 : 1;
  const name = className(view, view.masks[here], x, y) || className(view, view.masks[1 - here], x, y);
  view.tip.textContent = name || "";
  view.tip.style.display = name ? "block" : "none";
  view.tip.style.left = `${x * box.width}px`;
  view.tip.style.top = `${y * box.height}px`;
}

// Fade every pixel that is not class ``id`` towards white (each side by its own mask; a
// photo by the other side's mask).
function drawHighlight(view) {
  const id = view.hovered ?? view.pinned;
  [
    [view.leftCanvas, view.masks[0] || view.masks[1]],
    [view.rightCanvas, view.masks[1] || view.masks[0]],
  ].forEach(([canvas, mask]) => {
    const context = canvas.getContext("2d");
    if (id === null || id === undefined || !mask) {
      canvas.width = 1;
      canvas.height = 1;
      context.clearRect(0, 0, 1, 1);
      return;
    }
    canvas.width = mask.width;
    canvas.height = mask.height;
    const pixels = context.createImageData(mask.width, mask.height);
    const rgba = pixels.data;
    for (let i = 0; i < mask.ids.length; i++) {
      if (mask.ids[i] !== id) {
        rgba[4 * i] = 255;
        rgba[4 * i + 1] = 255;
        rgba[4 * i + 2] = 255;
        rgba[4 * i + 3] = 178;
      }
    }
    context.putImageData(pixels, 0, 0);
  });
  view.legend.querySelectorAll(".sv-entry").forEach((entry) => {
    entry.setAttribute("aria-pressed", String(Number(entry.dataset.classId) === view.pinned));
  });
}

function buildLegend(view) {
  view.legend.innerHTML = "";
  for (const entry of view.data.classes) {
    const button = element("button", "sv-entry", view.legend);
    button.type = "button";
    button.dataset.classId = String(entry.id);
    button.title = "Hover to highlight, click to keep it highlighted";
    const swatch = element("span", "sv-swatch", button);
    swatch.style.background = entry.color;
    element("span", "", button).textContent = entry.name;
    if (entry.shares) element("span", "sv-share", button).textContent = entry.shares;
    button.addEventListener("mouseenter", () => {
      view.hovered = entry.id;
      drawHighlight(view);
    });
    button.addEventListener("mouseleave", () => {
      view.hovered = null;
      drawHighlight(view);
    });
    button.addEventListener("click", () => {
      view.pinned = view.pinned === entry.id ? null : entry.id;
      drawHighlight(view);
    });
  }
}

export default function (component) {
  const { data, parentElement } = component;
  const root = parentElement.querySelector(".sv");
  if (!root || !data) return;
  let view = views.get(root);
  if (!view) {
    view = build(root);
    views.set(root, view);
  }
  const changed = !view.data || view.data.key !== data.key;
  view.data = data;
  view.byId = new Map(data.classes.map((entry) => [entry.id, entry]));
  view.stage.style.aspectRatio = `${data.width} / ${data.height}`;
  view.leftLabel.textContent = `◀ ${data.left.label}`;
  view.rightLabel.textContent = `${data.right.label} ▶`;
  if (view.leftImage.src !== data.left.src) view.leftImage.src = data.left.src;
  if (view.rightImage.src !== data.right.src) view.rightImage.src = data.right.src;
  if (changed) {
    view.pinned = null;
    view.hovered = null;
  }
  setPosition(view, view.position);
  view.readout.textContent = "Point at the picture to read the class under the pointer.";
  buildLegend(view);
  const token = {};
  view.token = token;
  Promise.all([decodeMask(data.left.mask), decodeMask(data.right.mask)]).then((masks) => {
    if (view.token !== token) return; // a newer render arrived meanwhile
    view.masks = masks;
    view.stage.dataset.ready = "true";
    drawHighlight(view);
  });
  view.stage.dataset.ready = "false";
}
