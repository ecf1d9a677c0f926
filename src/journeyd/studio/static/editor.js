// The Vary (Region) editor: the upscaled image on a canvas, with Rectangle, Lasso, Brush and Eraser,
// Invert and Clear, undo and redo, zoom and pan, and a mask upload. It resolves to {prompt, mask}
// (base64 PNG at native size) or null when the person cancels.

import { MIN_AREA, Mask } from "./mask.js";

const $ = (id) => document.getElementById(id);
const TOOL_KEYS = { r: "rect", l: "lasso", b: "brush", e: "eraser" };
const MAX_VIEW = 8; // zoom in to 8x the fitted size, for precise edges
const OVERLAY = [64, 160, 255, 110]; // the selection's tint: RGBA

export function loadImage(url) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new Error(`cannot load ${url}`));
    image.src = url;
  });
}

class View {
  // Native image coordinates <-> canvas pixels: screen = offset + native * scale.
  constructor(canvas, width, height) {
    this.canvas = canvas;
    this.width = width;
    this.height = height;
    const stage = canvas.parentElement.getBoundingClientRect();
    const fit = Math.min((stage.width || 768) / width, (Math.max(stage.height, 200) || 640) / height, 1);
    canvas.width = Math.max(1, Math.round(width * fit));
    canvas.height = Math.max(1, Math.round(height * fit));
    this.fitScale = canvas.width / width;
    this.fit();
  }

  fit() {
    this.scale = this.fitScale;
    this.x = 0;
    this.y = 0;
  }

  zoom(factor, cx = this.canvas.width / 2, cy = this.canvas.height / 2) {
    const scale = Math.min(this.fitScale * MAX_VIEW, Math.max(this.fitScale, this.scale * factor));
    const [nx, ny] = this.toNative(cx, cy);
    this.scale = scale;
    this.x = cx - nx * scale;
    this.y = cy - ny * scale;
    this.clamp();
  }

  pan(dx, dy) {
    this.x += dx;
    this.y += dy;
    this.clamp();
  }

  clamp() {
    const w = this.width * this.scale;
    const h = this.height * this.scale;
    this.x = Math.min(0, Math.max(this.canvas.width - w, this.x));
    this.y = Math.min(0, Math.max(this.canvas.height - h, this.y));
  }

  toNative(cx, cy) {
    return [(cx - this.x) / this.scale, (cy - this.y) / this.scale];
  }

  // A mouse event's position in native pixels, measured against the canvas's drawing area (its
  // content box: a border would otherwise shift the mask).
  eventToNative(event) {
    const box = this.canvas.getBoundingClientRect();
    const style = getComputedStyle(this.canvas);
    const left = box.left + parseFloat(style.borderLeftWidth) + parseFloat(style.paddingLeft);
    const top = box.top + parseFloat(style.borderTopWidth) + parseFloat(style.paddingTop);
    const innerWidth = this.canvas.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
    const ratio = this.canvas.width / (innerWidth || this.canvas.width);
    const [nx, ny] = this.toNative((event.clientX - left) * ratio, (event.clientY - top) * ratio);
    return [Math.max(0, Math.min(this.width, nx)), Math.max(0, Math.min(this.height, ny))];
  }
}

export class RegionEditor {
  constructor() {
    this.dialog = $("editor");
    this.canvas = $("editor-canvas");
    this.ctx = this.canvas.getContext("2d");
    this.tool = "rect";
    this.drag = null;
    this.spaceDown = false;
    this.size = Number($("brush-size").value);
    this.bind();
  }

  // Opens the editor over `imageUrl`; resolves when the person submits or cancels.
  async open(imageUrl, prompt) {
    this.image = await loadImage(imageUrl);
    const { naturalWidth: width, naturalHeight: height } = this.image;
    this.mask = new Mask(width, height);
    this.overlay = document.createElement("canvas");
    this.overlay.width = width;
    this.overlay.height = height;
    $("region-prompt").value = prompt;
    this.dialog.showModal();
    this.view = new View(this.canvas, width, height);
    this.changed();
    this.canvas.focus();
    return new Promise((resolve) => {
      this.finish = resolve;
    });
  }

  bind() {
    for (const button of document.querySelectorAll("[data-tool]")) {
      button.addEventListener("click", () => this.setTool(button.dataset.tool));
    }
    $("brush-size").addEventListener("input", (event) => this.setSize(Number(event.target.value)));
    $("mask-invert").addEventListener("click", () => this.apply({ type: "invert" }));
    $("mask-clear").addEventListener("click", () => this.apply({ type: "clear" }));
    $("mask-undo").addEventListener("click", () => this.mask.undo() && this.changed());
    $("mask-redo").addEventListener("click", () => this.mask.redo() && this.changed());
    $("zoom-in").addEventListener("click", () => this.zoom(1.5));
    $("zoom-out").addEventListener("click", () => this.zoom(1 / 1.5));
    $("zoom-fit").addEventListener("click", () => {
      this.view.fit();
      this.draw();
    });
    $("mask-upload").addEventListener("change", (event) => this.upload(event.target));
    this.canvas.addEventListener("pointerdown", (event) => this.down(event));
    this.canvas.addEventListener("pointermove", (event) => this.move(event));
    this.canvas.addEventListener("pointerup", (event) => this.up(event));
    this.canvas.addEventListener("pointerleave", () => this.drag || this.draw());
    this.canvas.addEventListener("contextmenu", (event) => event.preventDefault());
    this.canvas.addEventListener(
      "wheel",
      (event) => {
        event.preventDefault();
        const box = this.canvas.getBoundingClientRect();
        this.zoom(event.deltaY < 0 ? 1.25 : 0.8, event.clientX - box.left, event.clientY - box.top);
      },
      { passive: false },
    );
    this.dialog.addEventListener("keydown", (event) => this.key(event));
    this.dialog.addEventListener("keyup", (event) => {
      if (event.key === " ") this.spaceDown = false;
    });
    $("editor-form").addEventListener("submit", (event) => this.submit(event));
    this.dialog.addEventListener("cancel", () => this.close(null));
  }

  setTool(tool) {
    this.tool = tool;
    for (const button of document.querySelectorAll("[data-tool]")) {
      button.setAttribute("aria-pressed", String(button.dataset.tool === tool));
    }
  }

  setSize(size) {
    this.size = Math.max(4, Math.min(400, Math.round(size)));
    $("brush-size").value = this.size;
    $("brush-size-value").value = String(this.size);
  }

  zoom(factor, cx, cy) {
    this.view.zoom(factor, cx, cy);
    this.draw();
  }

  apply(op) {
    this.mask.push(op);
    this.changed();
  }

  async upload(input) {
    const file = input.files && input.files[0];
    input.value = "";
    if (!file) return;
    try {
      const bitmap = await createImageBitmap(file);
      this.apply({ type: "upload", bitmap });
    } catch {
      $("editor-status").textContent = `${file.name} is not an image this browser can read`;
    }
  }

  key(event) {
    if (event.target.tagName === "INPUT" && event.target.type === "text") return;
    const ctrl = event.ctrlKey || event.metaKey;
    const key = event.key.toLowerCase();
    if (ctrl && key === "z") {
      event.preventDefault();
      if (event.shiftKey ? this.mask.redo() : this.mask.undo()) this.changed();
    } else if (ctrl && key === "y") {
      event.preventDefault();
      if (this.mask.redo()) this.changed();
    } else if (ctrl) {
      return;
    } else if (TOOL_KEYS[key]) {
      this.setTool(TOOL_KEYS[key]);
    } else if (key === "[" || key === "]") {
      this.setSize(this.size * (key === "]" ? 1.25 : 0.8));
      this.draw();
    } else if (key === "i") {
      this.apply({ type: "invert" });
    } else if (key === "+" || key === "=") {
      this.zoom(1.25);
    } else if (key === "-") {
      this.zoom(0.8);
    } else if (key === "0") {
      this.view.fit();
      this.draw();
    } else if (key.startsWith("arrow") && event.target === this.canvas) {
      event.preventDefault();
      const step = 40;
      const d = { arrowleft: [step, 0], arrowright: [-step, 0], arrowup: [0, step], arrowdown: [0, -step] }[key];
      this.view.pan(d[0], d[1]);
      this.draw();
    } else if (key === " " && event.target === this.canvas) {
      event.preventDefault();
      this.spaceDown = true;
    }
  }

  down(event) {
    if (event.button === 2) return;
    this.canvas.setPointerCapture(event.pointerId);
    if (this.spaceDown || event.button === 1) {
      this.drag = { type: "pan", x: event.clientX, y: event.clientY };
      return;
    }
    const point = this.view.eventToNative(event);
    this.drag = { type: this.tool, start: point, points: [point], size: this.size };
    this.draw();
  }

  move(event) {
    this.pointer = event;
    const drag = this.drag;
    if (!drag) {
      if (this.tool === "brush" || this.tool === "eraser") this.draw();
      return;
    }
    if (drag.type === "pan") {
      this.view.pan(event.clientX - drag.x, event.clientY - drag.y);
      drag.x = event.clientX;
      drag.y = event.clientY;
    } else {
      drag.points.push(this.view.eventToNative(event));
    }
    this.draw();
  }

  up(event) {
    const drag = this.drag;
    this.drag = null;
    if (!drag || drag.type === "pan") return;
    const end = this.view.eventToNative(event);
    if (drag.type === "rect") {
      const [[x0, y0], [x1, y1]] = [drag.start, end];
      if (Math.abs(x1 - x0) >= 1 && Math.abs(y1 - y0) >= 1) this.apply({ type: "rect", x0, y0, x1, y1 });
      else this.draw();
    } else if (drag.type === "lasso") {
      drag.points.push(end);
      if (drag.points.length >= 3) this.apply({ type: "lasso", points: drag.points });
      else this.draw();
    } else {
      this.apply({ type: drag.type, points: drag.points, size: drag.size });
    }
  }

  // The mask changed: rebuild the tinted overlay, the buttons' states and the size warning.
  changed() {
    const { width, height, pixels } = this.mask;
    const ctx = this.overlay.getContext("2d");
    const image = ctx.createImageData(width, height);
    const out = image.data;
    for (let i = 0; i < out.length; i += 4) {
      if (pixels[i]) {
        out[i] = OVERLAY[0];
        out[i + 1] = OVERLAY[1];
        out[i + 2] = OVERLAY[2];
        out[i + 3] = OVERLAY[3];
      }
    }
    ctx.putImageData(image, 0, 0);
    $("mask-undo").disabled = !this.mask.canUndo;
    $("mask-redo").disabled = !this.mask.canRedo;
    const area = this.mask.area;
    const status = $("editor-status");
    if (!area) {
      status.textContent = "Select the region to repaint.";
    } else if (area < MIN_AREA) {
      status.textContent = `The selection is ${area.toLocaleString("en")} px: Midjourney's minimum is ${MIN_AREA.toLocaleString("en")} px. Select a larger region.`;
    } else {
      const share = ((100 * area) / (width * height)).toFixed(1);
      status.textContent = `Selected ${area.toLocaleString("en")} px (${share}% of the image).`;
    }
    status.classList.toggle("warning", area > 0 && area < MIN_AREA);
    this.draw();
  }

  draw() {
    const { ctx, view } = this;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
    ctx.setTransform(view.scale, 0, 0, view.scale, view.x, view.y);
    ctx.imageSmoothingEnabled = view.scale < 2; // crisp pixels when zoomed in, for precise edges
    ctx.drawImage(this.image, 0, 0);
    ctx.drawImage(this.overlay, 0, 0);
    ctx.lineWidth = 1.5 / view.scale;
    ctx.strokeStyle = "#fff";
    const drag = this.drag;
    if (drag && drag.type === "rect") {
      const [x0, y0] = drag.start;
      const [x1, y1] = drag.points[drag.points.length - 1];
      ctx.setLineDash([6 / view.scale, 4 / view.scale]);
      ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
    } else if (drag && drag.type === "lasso") {
      ctx.setLineDash([6 / view.scale, 4 / view.scale]);
      ctx.beginPath();
      drag.points.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
      ctx.stroke();
    } else if (drag && (drag.type === "brush" || drag.type === "eraser")) {
      ctx.lineWidth = drag.size;
      ctx.lineCap = ctx.lineJoin = "round";
      ctx.strokeStyle = drag.type === "brush" ? "rgba(64,160,255,0.6)" : "rgba(0,0,0,0.6)";
      ctx.beginPath();
      drag.points.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
      ctx.stroke();
    }
    ctx.setLineDash([]);
    if (!drag && this.pointer && (this.tool === "brush" || this.tool === "eraser")) {
      const [x, y] = view.eventToNative(this.pointer);
      ctx.lineWidth = 1.5 / view.scale;
      ctx.strokeStyle = "#fff";
      ctx.beginPath();
      ctx.arc(x, y, this.size / 2, 0, 2 * Math.PI); // the brush is sized in native pixels
      ctx.stroke();
    }
  }

  submit(event) {
    const cancelled = event.submitter && event.submitter.value === "cancel";
    if (cancelled) return this.close(null);
    event.preventDefault();
    if (this.mask.area < MIN_AREA) {
      $("editor-status").textContent =
        this.mask.area === 0
          ? "Select the region to repaint first."
          : `Too small to submit: ${this.mask.area.toLocaleString("en")} px selected, ${MIN_AREA.toLocaleString("en")} px needed.`;
      $("editor-status").classList.add("warning");
      return;
    }
    this.close({ prompt: $("region-prompt").value.trim(), mask: this.mask.toBase64() });
  }

  close(result) {
    if (this.dialog.open) this.dialog.close();
    this.pointer = null;
    const finish = this.finish;
    this.finish = null;
    if (finish) finish(result);
  }
}
