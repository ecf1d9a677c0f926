// The Vary (Region) selection as a list of operations at the image's native size. Undo and redo move
// along the list and the mask is redrawn from it, so every state is exactly reproducible.

export const MIN_AREA = 10000; // Midjourney's editor refuses smaller selections (px² at native size)
const HISTORY_LIMIT = 100; // InvokeAI capped its history at 100 after users reported lag

export class Mask {
  constructor(width, height) {
    this.width = width;
    this.height = height;
    this.canvas = document.createElement("canvas");
    this.canvas.width = width;
    this.canvas.height = height;
    this.ctx = this.canvas.getContext("2d", { willReadFrequently: true });
    this.ops = [];
    this.undone = [];
    this.area = 0;
    this.redraw();
  }

  push(op) {
    this.ops.push(op);
    if (this.ops.length > HISTORY_LIMIT) this.ops.shift();
    this.undone = [];
    this.redraw();
  }

  undo() {
    if (!this.ops.length) return false;
    this.undone.push(this.ops.pop());
    this.redraw();
    return true;
  }

  redo() {
    if (!this.undone.length) return false;
    this.ops.push(this.undone.pop());
    this.redraw();
    return true;
  }

  get canUndo() {
    return this.ops.length > 0;
  }

  get canRedo() {
    return this.undone.length > 0;
  }

  redraw() {
    const ctx = this.ctx;
    ctx.globalCompositeOperation = "source-over";
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, this.width, this.height);
    for (const op of this.ops) {
      ctx.save();
      applyOp(ctx, op, this.width, this.height);
      ctx.restore();
    }
    this.binarize();
  }

  // Every pixel to 0 or 255 (antialiased edges at 50%), and count the selected ones.
  binarize() {
    const image = this.ctx.getImageData(0, 0, this.width, this.height);
    const data = image.data;
    let area = 0;
    for (let i = 0; i < data.length; i += 4) {
      const on = data[i] >= 128;
      const value = on ? 255 : 0;
      data[i] = data[i + 1] = data[i + 2] = value;
      data[i + 3] = 255;
      area += on;
    }
    this.ctx.putImageData(image, 0, 0);
    this.area = area;
    this.pixels = data;
  }

  // The PNG journeyd receives: native size, white = repaint, only 0 and 255; raw base64 as Discord sends.
  toBase64() {
    return this.canvas.toDataURL("image/png").slice("data:image/png;base64,".length);
  }
}

function path(ctx, points) {
  ctx.beginPath();
  ctx.moveTo(points[0][0], points[0][1]);
  for (const [x, y] of points.slice(1)) ctx.lineTo(x, y);
}

function applyOp(ctx, op, width, height) {
  switch (op.type) {
    case "rect": {
      const x = Math.min(op.x0, op.x1);
      const y = Math.min(op.y0, op.y1);
      ctx.fillStyle = "#fff";
      ctx.fillRect(x, y, Math.abs(op.x1 - op.x0), Math.abs(op.y1 - op.y0));
      break;
    }
    case "lasso":
      if (op.points.length < 3) break;
      ctx.fillStyle = "#fff";
      path(ctx, op.points);
      ctx.closePath();
      ctx.fill();
      break;
    case "brush":
    case "eraser": {
      ctx.strokeStyle = ctx.fillStyle = op.type === "brush" ? "#fff" : "#000";
      ctx.lineWidth = op.size;
      ctx.lineCap = ctx.lineJoin = "round";
      if (op.points.length === 1) {
        const [x, y] = op.points[0];
        ctx.beginPath();
        ctx.arc(x, y, op.size / 2, 0, 2 * Math.PI);
        ctx.fill();
      } else {
        path(ctx, op.points);
        ctx.stroke();
      }
      break;
    }
    case "invert":
      ctx.globalCompositeOperation = "difference";
      ctx.fillStyle = "#fff";
      ctx.fillRect(0, 0, width, height);
      break;
    case "clear":
      ctx.fillStyle = "#000";
      ctx.fillRect(0, 0, width, height);
      break;
    case "upload": {
      // The uploaded mask replaces the selection: white repaints; black or transparent keeps.
      ctx.fillStyle = "#000";
      ctx.fillRect(0, 0, width, height);
      const layer = document.createElement("canvas");
      layer.width = width;
      layer.height = height;
      const layerCtx = layer.getContext("2d", { willReadFrequently: true });
      layerCtx.drawImage(op.bitmap, 0, 0, width, height);
      const image = layerCtx.getImageData(0, 0, width, height);
      const d = image.data;
      for (let i = 0; i < d.length; i += 4) {
        const luma = (0.299 * d[i] + 0.587 * d[i + 1] + 0.114 * d[i + 2]) * (d[i + 3] / 255);
        const value = luma >= 128 ? 255 : 0;
        d[i] = d[i + 1] = d[i + 2] = value;
        d[i + 3] = 255;
      }
      layerCtx.putImageData(image, 0, 0);
      ctx.drawImage(layer, 0, 0);
      break;
    }
    default:
      throw new Error(`unknown mask operation ${op.type}`);
  }
}
