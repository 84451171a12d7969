// The interactive data map: see builder.py (datamap.cartography.page.builder) for the
// design and the data format, and docs/data-map-page.md.
//
// Every string from the data (labels, texts, file and feature names, notes, reviewers, the
// title) reaches the DOM through textContent or an <option>/<input> value, never as markup; the
// page's Content-Security-Policy enforces Trusted Types, so an innerHTML assignment would throw.
"use strict";

(() => {
  const config = JSON.parse(document.getElementById("dm-config").textContent);
  const N = config.n;
  const $ = (id) => document.getElementById(id);
  const fmtInt = (v) => v.toLocaleString("en");

  /** A data value (a class name, a note, a reviewer) inside a line of the page's own words,
   * isolated (U+2068 ... U+2069) so that a right-to-left override in it cannot reorder the
   * words or values around it. */
  const iso = (value) => `\u2068${value}\u2069`;

  /** An element with text (textContent) and an optional class. */
  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = text;
    if (className) node.className = className;
    return node;
  }

  // ------------------------------------------------------------------------------------------
  // data: base64 blobs, gzip-decoded by the browser, viewed as typed arrays

  const TYPES = { f32: Float32Array, u8: Uint8Array, u16: Uint16Array, u32: Uint32Array,
                  i64: BigInt64Array };

  function base64Bytes(text) {
    if (Uint8Array.fromBase64) return Uint8Array.fromBase64(text);
    const binary = atob(text);
    const out = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
    return out;
  }

  async function blobBytes(index) {
    const node = $(`dm-blob-${index}`);
    const bytes = base64Bytes(node.textContent);
    const encoding = node.dataset.encoding;
    node.remove();  // the base64 text is no longer needed: let the browser free it
    if (encoding !== "gzip") return bytes;
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  }

  /** A column's typed array (every decoded buffer starts at offset 0, so it is aligned). */
  async function column(entry) {
    const bytes = await blobBytes(entry.blob);
    return new TYPES[entry.type](bytes.buffer, bytes.byteOffset, entry.length);
  }

  /** Strings stored as one UTF-8 blob and offsets; decoded one at a time, when shown. */
  async function strings(entry) {
    const [bytes, offsets] = await Promise.all([column(entry.bytes), column(entry.offsets)]);
    const decoder = new TextDecoder();
    return (i) => decoder.decode(bytes.subarray(offsets[i], offsets[i + 1]));
  }

  async function load() {
    const names = Object.keys(config.columns);
    const arrays = await Promise.all(names.map((name) => column(config.columns[name])));
    const data = Object.fromEntries(names.map((name, k) => [name, arrays[k]]));
    const preview = config.preview;
    if (preview && preview.kind === "texts") {
      data.text = await strings(preview.texts);
      if (preview.pairs) data.pair = await strings(preview.pairs);
    } else if (preview && preview.kind === "images") {
      data.pixels = await column(preview.pixels);
      if (preview.files) data.file = await strings(preview.files);
    } else if (preview && preview.kind === "features") {
      data.features = await column(preview.values);
    }
    return data;
  }

  // ------------------------------------------------------------------------------------------
  // colours: ImageData pixels are RGBA bytes, i.e. 0xAABBGGRR as little-endian Uint32

  function packColour(hex, alpha = 1) {
    const rgb = [1, 3, 5].map((k) => parseInt(hex.slice(k, k + 2), 16));
    // blended with the white background: "alpha" without blending at draw time
    const [r, g, b] = rgb.map((v) => Math.round(v * alpha + 255 * (1 - alpha)));
    return ((255 << 24) | (b << 16) | (g << 8) | r) >>> 0;
  }
  const BACKGROUND = packColour("#ffffff");
  const UNSELECTED_ALPHA = 0.2;

  function start(data) {
    const { id: ids, gold, most_predicted: predicted, confidence, variability, correctness,
            forgetfulness, region } = data;
    const flipped = data.flipped;
    const neverLearned = data.never_learned;
    const classNames = config.classNames;

    // ----------------------------------------------------------------------------------------
    // state

    const shown = new Uint8Array(N).fill(1);  // passes the filters
    let shownCount = N;
    const selected = new Uint8Array(N);  // invariant: selected implies shown
    let selectedList = new Int32Array(0);  // the selected rows, ascending (= ascending id)
    const decisionCode = new Uint8Array(N);  // 0: none, else 1 + index into config.actions
    const decisions = new Map();  // row -> {action, label (class index or -1), note, reviewer}
    const offMap = [];  // prior decisions about ids not on the map, ascending id
    let inspected = -1;  // the example shown in the inspector and ringed on the map
    let hovered = -1;

    const prior = config.decisions;
    prior.onMap.index.forEach((row, k) => {
      decisions.set(row, { action: prior.onMap.action[k], label: prior.onMap.label[k],
                           note: prior.onMap.note[k], reviewer: prior.onMap.reviewer[k] });
      decisionCode[row] = prior.onMap.action[k] + 1;
    });
    prior.offMap.id.forEach((id, k) => {
      offMap.push({ id: BigInt(id), action: prior.offMap.action[k], label: prior.offMap.label[k],
                    note: prior.offMap.note[k], reviewer: prior.offMap.reviewer[k] });
    });

    // ----------------------------------------------------------------------------------------
    // colourings: a code per point and a palette per colouring

    const colourings = [
      { key: "correctness", title: "correctness", labels: [...Array(11).keys()].map(
        (b) => (b / 10).toFixed(1)), colours: config.colours.correctness,
        code: (i) => Math.round(correctness[i] * 10) },
      { key: "region", title: "region", labels: config.regions, colours: config.colours.region,
        code: (i) => region[i] },
    ];
    if (flipped) {
      colourings.push({ key: "flipped", title: "label flipped", labels: ["kept", "flipped"],
                        colours: config.colours.flipped, code: (i) => flipped[i] });
    }
    colourings.push({ key: "decision", title: "decision", labels: ["none", ...config.actions],
                      colours: config.colours.decision, code: (i) => decisionCode[i] });
    let colouring = colourings[0];
    const colourCode = new Uint8Array(N);
    let palette = new Uint32Array(0);
    let fadedPalette = new Uint32Array(0);

    function recolour() {
      for (let i = 0; i < N; i++) colourCode[i] = colouring.code(i);
      palette = Uint32Array.from(colouring.colours, (c) => packColour(c));
      fadedPalette = Uint32Array.from(colouring.colours, (c) => packColour(c, UNSELECTED_ALPHA));
      updateLegend();
    }

    // ----------------------------------------------------------------------------------------
    // geometry: the frame (plot area) inside the map canvas, and the view in data units

    const FRAME_W = 720, FRAME_H = 560;
    const MARGIN = { left: 56, right: 10, top: 8, bottom: 42 };
    const HIST_SIZE = 110;
    const CANVAS_W = MARGIN.left + FRAME_W + MARGIN.right;
    const CANVAS_H = MARGIN.top + FRAME_H + MARGIN.bottom;
    const HOME = { x0: 0, x1: config.histogram.xMax, y0: -0.02, y1: 1.02 };
    let view = { ...HOME };
    let dpr = 1;

    const mapCanvas = $("dm-map"), histX = $("dm-hist-x"), histY = $("dm-hist-y");
    const mapContext = mapCanvas.getContext("2d");
    let image = null, pixels = null, owner = null;  // the raster, and which row owns a pixel

    function resize() {
      dpr = window.devicePixelRatio || 1;
      const sizes = [[mapCanvas, CANVAS_W, CANVAS_H], [histX, CANVAS_W, HIST_SIZE],
                     [histY, HIST_SIZE, CANVAS_H]];
      for (const [canvas, w, h] of sizes) {
        canvas.width = Math.round(w * dpr);
        canvas.height = Math.round(h * dpr);
        canvas.style.width = `${w}px`;
        canvas.style.height = `${h}px`;
      }
      image = mapContext.createImageData(Math.round(FRAME_W * dpr), Math.round(FRAME_H * dpr));
      pixels = new Uint32Array(image.data.buffer);
      owner = new Int32Array(image.width * image.height);
      requestDraw(true);
    }

    /** Data coordinates -> CSS pixels relative to the frame's top-left corner. */
    const frameX = (x) => (x - view.x0) / (view.x1 - view.x0) * FRAME_W;
    const frameY = (y) => (view.y1 - y) / (view.y1 - view.y0) * FRAME_H;
    const dataX = (px) => view.x0 + px / FRAME_W * (view.x1 - view.x0);
    const dataY = (py) => view.y1 - py / FRAME_H * (view.y1 - view.y0);

    /** A pointer event's position relative to the frame, in CSS pixels. */
    function framePoint(event) {
      const box = mapCanvas.getBoundingClientRect();
      return [event.clientX - box.left - MARGIN.left, event.clientY - box.top - MARGIN.top];
    }

    /** Point size in device pixels: small for dense maps, growing as the view zooms in. */
    function pointSize() {
      const base = N <= 5000 ? 6 : N <= 50000 ? 4 : N <= 300000 ? 3 : 2;
      const zoom = (HOME.x1 - HOME.x0) / (view.x1 - view.x0);
      return Math.max(1, Math.round(Math.min(base * Math.sqrt(Math.max(zoom, 1)), 12) * dpr));
    }

    /** Pixel offsets of a point of ``size`` pixels from its top-left corner: a square, or a
     * disc from 4 pixels on; and the same as (dx, dy) pairs for points cut by the frame edge. */
    function stamp(size, stride) {
      const offsets = [], pairs = [];
      const c = (size - 1) / 2, r2 = (size / 2) ** 2 + 0.25;
      for (let dy = 0; dy < size; dy++) {
        for (let dx = 0; dx < size; dx++) {
          if (size >= 4 && (dx - c) ** 2 + (dy - c) ** 2 > r2) continue;
          offsets.push(dy * stride + dx);
          pairs.push(dx, dy);
        }
      }
      return { offsets: Int32Array.from(offsets), pairs: Int32Array.from(pairs) };
    }

    // ----------------------------------------------------------------------------------------
    // the map: every shown point written into the pixel buffer, the selection on top

    function rasterise() {
      const W = image.width, H = image.height;
      const size = pointSize(), half = size >> 1;
      const { offsets, pairs } = stamp(size, W);
      const sx = W / (view.x1 - view.x0), sy = H / (view.y1 - view.y0);
      const x0 = view.x0, y1 = view.y1;
      pixels.fill(BACKGROUND);
      owner.fill(0);
      const plot = (i, colour) => {
        const px = Math.floor((variability[i] - x0) * sx) - half;
        const py = Math.floor((y1 - confidence[i]) * sy) - half;
        if (px >= 0 && py >= 0 && px + size <= W && py + size <= H) {
          const o = py * W + px;
          for (let k = 0; k < offsets.length; k++) {
            pixels[o + offsets[k]] = colour;
            owner[o + offsets[k]] = i + 1;
          }
        } else if (px + size > 0 && py + size > 0 && px < W && py < H) {  // cut by an edge
          for (let k = 0; k < pairs.length; k += 2) {
            const x = px + pairs[k], y = py + pairs[k + 1];
            if (x < 0 || y < 0 || x >= W || y >= H) continue;
            pixels[y * W + x] = colour;
            owner[y * W + x] = i + 1;
          }
        }
      };
      const anySelected = selectedList.length > 0;
      const base = anySelected ? fadedPalette : palette;
      for (let i = 0; i < N; i++) {
        if (shown[i] && !selected[i]) plot(i, base[colourCode[i]]);
      }
      for (let k = 0; k < selectedList.length; k++) {
        const i = selectedList[k];
        plot(i, palette[colourCode[i]]);
      }
    }

    /** The shown point drawn nearest to a frame position (CSS pixels), within a few pixels. */
    function pick(fx, fy) {
      const W = image.width, H = image.height;
      const cx = Math.round(fx * dpr), cy = Math.round(fy * dpr);
      const r = Math.round(Math.max(5, pointSize() / dpr) * dpr);
      let best = -1, bestD = Infinity;
      for (let y = Math.max(0, cy - r); y <= Math.min(H - 1, cy + r); y++) {
        for (let x = Math.max(0, cx - r); x <= Math.min(W - 1, cx + r); x++) {
          const who = owner[y * W + x];
          if (who === 0) continue;
          const d = (x - cx) ** 2 + (y - cy) ** 2;
          if (d < bestD) { bestD = d; best = who - 1; }
        }
      }
      return bestD <= r * r ? best : -1;
    }

    function niceTicks(lo, hi, count) {
      const raw = (hi - lo) / count;
      const power = 10 ** Math.floor(Math.log10(raw));
      const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw);
      const digits = Math.max(0, -Math.floor(Math.log10(step)));
      const ticks = [];
      for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) {
        ticks.push([t, t.toFixed(digits)]);
      }
      return ticks;
    }

    let drag = null;  // the gesture under way: {tool, start: [fx, fy], path, shift, view}
    let lastBox = null, lastLasso = [];  // the last box and lasso, in data coordinates

    function paintMap() {
      const ctx = mapContext;
      ctx.setTransform(1, 0, 0, 1, 0, 0);
      ctx.fillStyle = "#fff";
      ctx.fillRect(0, 0, mapCanvas.width, mapCanvas.height);
      ctx.putImageData(image, Math.round(MARGIN.left * dpr), Math.round(MARGIN.top * dpr));
      ctx.setTransform(dpr, 0, 0, dpr, MARGIN.left * dpr, MARGIN.top * dpr);
      ctx.strokeStyle = "#888";
      ctx.lineWidth = 1;
      ctx.strokeRect(-0.5, -0.5, FRAME_W + 1, FRAME_H + 1);
      ctx.fillStyle = "#333";
      ctx.font = "12px system-ui, sans-serif";
      ctx.textAlign = "center";
      ctx.textBaseline = "top";
      for (const [t, label] of niceTicks(view.x0, view.x1, 8)) {
        const x = frameX(t);
        ctx.fillRect(x - 0.5, FRAME_H, 1, 5);
        ctx.fillText(label, x, FRAME_H + 7);
      }
      ctx.fillText("variability", FRAME_W / 2, FRAME_H + 24);
      ctx.textAlign = "right";
      ctx.textBaseline = "middle";
      for (const [t, label] of niceTicks(view.y0, view.y1, 8)) {
        const y = frameY(t);
        ctx.fillRect(-5, y - 0.5, 5, 1);
        ctx.fillText(label, -8, y);
      }
      ctx.save();
      ctx.translate(-44, FRAME_H / 2);
      ctx.rotate(-Math.PI / 2);
      ctx.textAlign = "center";
      ctx.fillText("confidence", 0, 0);
      ctx.restore();

      ctx.save();
      ctx.beginPath();
      ctx.rect(0, 0, FRAME_W, FRAME_H);
      ctx.clip();
      for (const [row, colour] of [[inspected, "#000"], [hovered, "#555"]]) {
        if (row < 0) continue;
        ctx.beginPath();
        ctx.arc(frameX(variability[row]), frameY(confidence[row]), 7, 0, 2 * Math.PI);
        ctx.strokeStyle = colour;
        ctx.lineWidth = 2;
        ctx.stroke();
      }
      if (drag && (drag.tool === "box" || drag.tool === "lasso") && drag.moved) {
        ctx.setLineDash([4, 3]);
        ctx.strokeStyle = "#000";
        ctx.lineWidth = 1;
        ctx.fillStyle = "#f0a30a22";
        ctx.beginPath();
        if (drag.tool === "box") {
          const [ax, ay] = drag.start, [bx, by] = drag.path[drag.path.length - 1];
          ctx.rect(Math.min(ax, bx), Math.min(ay, by), Math.abs(bx - ax), Math.abs(by - ay));
        } else {
          drag.path.forEach(([x, y], k) => (k ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
          ctx.closePath();
        }
        ctx.fill();
        ctx.stroke();
      }
      ctx.restore();
    }

    // ----------------------------------------------------------------------------------------
    // marginal histograms of the shown points, the selection overlaid

    const BINS = config.histogram.bins;
    const hist = { x: new Float64Array(BINS), y: new Float64Array(BINS),
                   selX: new Float64Array(BINS), selY: new Float64Array(BINS) };

    const binX = (i) => Math.min(BINS - 1, Math.floor(variability[i] / config.histogram.xMax * BINS));
    const binY = (i) => Math.min(BINS - 1, Math.floor(confidence[i] * BINS));

    /** Histograms of the shown points (after a filter change). */
    function countShown() {
      hist.x.fill(0);
      hist.y.fill(0);
      for (let i = 0; i < N; i++) {
        if (!shown[i]) continue;
        hist.x[binX(i)]++;
        hist.y[binY(i)]++;
      }
    }

    /** Histograms of the selection (after a selection change). */
    function countSelected() {
      hist.selX.fill(0);
      hist.selY.fill(0);
      for (const i of selectedList) {
        hist.selX[binX(i)]++;
        hist.selY[binY(i)]++;
      }
    }

    function paintHistograms() {
      const xEdge = (b) => MARGIN.left + frameX(b * config.histogram.xMax / BINS);
      const yEdge = (b) => MARGIN.top + frameY(b / BINS);
      const top = Math.max(1, ...hist.x), side = Math.max(1, ...hist.y);
      const room = HIST_SIZE - 8;
      let ctx = histX.getContext("2d");
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      ctx.clearRect(0, 0, CANVAS_W, HIST_SIZE);
      ctx.save();
      ctx.beginPath();
      ctx.rect(MARGIN.left, 0, FRAME_W, HIST_SIZE);
      ctx.clip();
      for (const [counts, colour] of [[hist.x, "#008080aa"], [hist.selX, config.colours.selected]]) {
        ctx.fillStyle = colour;
        for (let b = 0; b < BINS; b++) {
          const h = counts[b] / top * room;
          ctx.fillRect(xEdge(b), HIST_SIZE - h, xEdge(b + 1) - xEdge(b) - 0.5, h);
        }
      }
      ctx.restore();
      ctx = histY.getContext("2d");
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      ctx.clearRect(0, 0, HIST_SIZE, CANVAS_H);
      ctx.save();
      ctx.beginPath();
      ctx.rect(0, MARGIN.top, HIST_SIZE, FRAME_H);
      ctx.clip();
      for (const [counts, colour] of [[hist.y, "#622a87aa"], [hist.selY, config.colours.selected]]) {
        ctx.fillStyle = colour;
        for (let b = 0; b < BINS; b++) {
          const w = counts[b] / side * room;
          ctx.fillRect(0, yEdge(b + 1), w, yEdge(b) - yEdge(b + 1) - 0.5);
        }
      }
      ctx.restore();
    }

    // ----------------------------------------------------------------------------------------
    // drawing on demand: at most one frame per animation frame

    let rasterDirty = true, frameRequested = false, frames = 0, firstRender = null;

    function requestDraw(raster) {
      if (raster) rasterDirty = true;
      if (!frameRequested) {
        frameRequested = true;
        requestAnimationFrame(drawFrame);
      }
    }

    function drawFrame() {
      frameRequested = false;
      if (rasterDirty) {
        rasterise();
        rasterDirty = false;
      }
      paintMap();
      paintHistograms();
      frames++;
      if (firstRender === null) {
        firstRender = performance.now();
        document.body.dataset.state = "ready";
      }
    }

    // ----------------------------------------------------------------------------------------
    // the example: what the tooltip and the inspector show

    function describe(i) {
      const box = el("div", undefined, "dm-example");
      const preview = config.preview;
      if (preview && preview.kind === "images") {
        box.append(thumbnail(i, preview));
        if (data.file) box.append(el("div", data.file(i), "dm-text"));
      } else if (preview && preview.kind === "texts") {
        box.append(el("div", data.text(i), "dm-text"));
        if (data.pair) box.append(el("div", data.pair(i), "dm-text"));
      } else if (preview && preview.kind === "features") {
        const k = preview.names.length;
        const parts = preview.names.map(
          (name, j) => `${name}=${Number(data.features[i * k + j].toPrecision(4))}`);
        const more = preview.more ? ` \u2026 (+${preview.more} more)` : "";
        box.append(el("div", parts.join(", ") + more, "dm-text"));
      }
      const forgot = neverLearned && neverLearned[i] ? "never learned" : String(forgetfulness[i]);
      const lines = [
        [`id ${ids[i]}`, ` \u00b7 ${config.regions[region[i]]}`],
        [`given ${iso(classNames[gold[i]])}`,
          ` \u00b7 most predicted ${iso(classNames[predicted[i]])}`],
        [`confidence ${confidence[i].toFixed(3)}`, ` \u00b7 variability ${variability[i].toFixed(3)}`],
        [`correctness ${correctness[i].toFixed(2)}`, ` \u00b7 forgetfulness ${forgot}`],
      ];
      if (flipped) lines.push([flipped[i] ? "label flipped" : "label kept", ""]);
      lines.forEach(([head, rest], k) => {
        const line = el("div");
        line.append(k === 0 ? el("span", head, "dm-head") : head, rest);
        box.append(line);
      });
      const decision = decisions.get(i);
      if (decision) box.append(el("div", `decision: ${decisionText(decision)}`, "dm-decision"));
      return box;
    }

    function decisionText(d) {
      const action = config.actions[d.action];
      const what = action === "relabel" ? `relabel to ${iso(classNames[d.label])}` : action;
      const by = d.reviewer ? ` (${iso(d.reviewer)})` : "";
      return d.note ? `${what}: ${iso(d.note)}${by}` : what + by;
    }

    /** The example's raw pixels [C, h, w] drawn into a canvas, scaled up pixelated by CSS. */
    function thumbnail(i, preview) {
      const { channels: c, height: h, width: w } = preview;
      const canvas = el("canvas", undefined, "dm-thumb");
      canvas.width = w;
      canvas.height = h;
      canvas.style.width = `${preview.displayWidth}px`;
      canvas.style.height = `${preview.displayHeight}px`;
      const ctx = canvas.getContext("2d");
      const out = ctx.createImageData(w, h);
      const src = data.pixels, plane = h * w, base = i * c * plane;
      // value q of the flat [N, C, h, w] stream: a byte, or a nibble (low one first) at 4 bits
      const value = preview.bits === 8 ? (q) => src[q]
        : (q) => ((src[q >> 1] >> ((q & 1) << 2)) & 15) * 17;
      for (let p = 0; p < plane; p++) {
        const grey = value(base + p);
        out.data[4 * p] = grey;
        out.data[4 * p + 1] = c >= 3 ? value(base + plane + p) : grey;
        out.data[4 * p + 2] = c >= 3 ? value(base + 2 * plane + p) : grey;
        out.data[4 * p + 3] = c === 4 ? value(base + 3 * plane + p) : 255;
      }
      ctx.putImageData(out, 0, 0);
      return canvas;
    }

    const tooltip = $("dm-tooltip");

    /** Show the tooltip (its content set on entering a point) beside the pointer. */
    function placeTooltip(event) {
      tooltip.hidden = false;
      const pad = 14, box = tooltip.getBoundingClientRect();
      let x = event.clientX + pad, y = event.clientY + pad;
      if (x + box.width > window.innerWidth) x = event.clientX - pad - box.width;
      if (y + box.height > window.innerHeight) y = Math.max(0, event.clientY - pad - box.height);
      tooltip.style.left = `${x}px`;
      tooltip.style.top = `${y}px`;
    }

    function inspect(i) {
      inspected = i;
      $("dm-inspector").hidden = i < 0;
      $("dm-inspected").replaceChildren(...(i < 0 ? [] : [describe(i)]));
      for (const row of $("dm-table-body").children) {
        row.classList.toggle("dm-current", Number(row.dataset.row) === i);
      }
      requestDraw(false);
    }

    // ----------------------------------------------------------------------------------------
    // selection

    /** Replace the selection with ``rows`` (shown rows, any order), or add them (``add``). */
    function select(rows, add = false) {
      if (!add) selected.fill(0);
      for (const i of rows) selected[i] = 1;
      selectionChanged();
    }

    /** After ``selected`` changed: the list, its histograms, the table and the status. */
    function selectionChanged() {
      let count = 0;
      for (let i = 0; i < N; i++) count += selected[i];
      selectedList = new Int32Array(count);
      for (let i = 0, k = 0; k < count; i++) if (selected[i]) selectedList[k++] = i;
      countSelected();
      page = 0;
      renderTable();
      const status = $("dm-selection-status");
      status.textContent = count === 0
        ? "Nothing selected: drag a box or a lasso over the map (shift-drag adds to the selection)."
        : `${fmtInt(count)} selected`;
      $("dm-download-ids").disabled = count === 0;
      $("dm-apply").disabled = count === 0;
      requestDraw(true);
    }

    /** Select the shown points in a box (data units, edges included); ``add`` keeps the rest. */
    function selectBox(ax, ay, bx, by, add) {
      const x0 = Math.min(ax, bx), x1 = Math.max(ax, bx);
      const y0 = Math.min(ay, by), y1 = Math.max(ay, by);
      if (!add) selected.fill(0);
      for (let i = 0; i < N; i++) {
        const x = variability[i], y = confidence[i];
        if (shown[i] && x >= x0 && x <= x1 && y >= y0 && y <= y1) selected[i] = 1;
      }
      selectionChanged();
    }

    /** Select the shown points inside a polygon (flat [x0, y0, x1, y1, ...] in data units,
     * even-odd rule); ``add`` keeps the rest. Edges are bucketed by horizontal bands, so a
     * point is tested against the few edges that cross its band, not the whole lasso. */
    function selectPolygon(poly, add) {
      const m = poly.length / 2;
      let xMin = Infinity, xMax = -Infinity, yMin = Infinity, yMax = -Infinity;
      for (let k = 0; k < m; k++) {
        xMin = Math.min(xMin, poly[2 * k]); xMax = Math.max(xMax, poly[2 * k]);
        yMin = Math.min(yMin, poly[2 * k + 1]); yMax = Math.max(yMax, poly[2 * k + 1]);
      }
      const bands = Math.max(1, Math.min(256, m)), height = (yMax - yMin) / bands || 1;
      const bandOf = (y) => Math.min(bands - 1, Math.max(0, Math.floor((y - yMin) / height)));
      const edges = Array.from({ length: bands }, () => []);
      for (let k = 0; k < m; k++) {
        const j = (k + 1) % m;
        const lo = bandOf(Math.min(poly[2 * k + 1], poly[2 * j + 1]));
        const hi = bandOf(Math.max(poly[2 * k + 1], poly[2 * j + 1]));
        for (let b = lo; b <= hi; b++) edges[b].push(k);
      }
      if (!add) selected.fill(0);
      for (let i = 0; i < N; i++) {
        const x = variability[i], y = confidence[i];
        if (!shown[i] || x < xMin || x > xMax || y < yMin || y > yMax) continue;
        let inside = false;
        for (const k of edges[bandOf(y)]) {
          const j = (k + 1) % m;
          const xa = poly[2 * k], ya = poly[2 * k + 1], xb = poly[2 * j], yb = poly[2 * j + 1];
          if ((ya > y) !== (yb > y) && x < (xb - xa) * (y - ya) / (yb - ya) + xa) inside = !inside;
        }
        if (inside) selected[i] = 1;
      }
      selectionChanged();
    }

    // ----------------------------------------------------------------------------------------
    // pointer gestures on the map: hover, click, box, lasso, pan; the wheel zooms

    const tool = () => document.querySelector('input[name="dm-tool"]:checked').value;

    mapCanvas.addEventListener("pointerdown", (event) => {
      if (event.button !== 0) return;
      const at = framePoint(event);
      drag = { tool: tool(), start: at, path: [at], shift: event.shiftKey, view: { ...view },
               moved: false };
      mapCanvas.setPointerCapture(event.pointerId);
      tooltip.hidden = true;
    });

    mapCanvas.addEventListener("pointermove", (event) => {
      const at = framePoint(event);
      if (!drag) {
        const inside = at[0] >= 0 && at[1] >= 0 && at[0] < FRAME_W && at[1] < FRAME_H;
        const i = inside ? pick(at[0], at[1]) : -1;
        if (i !== hovered) {
          hovered = i;
          if (i >= 0) tooltip.replaceChildren(describe(i));
          requestDraw(false);
        }
        if (i < 0) tooltip.hidden = true;
        else placeTooltip(event);
        return;
      }
      const [sx, sy] = drag.start;
      drag.moved ||= Math.hypot(at[0] - sx, at[1] - sy) >= 3;
      if (drag.tool === "pan") {
        const dx = (at[0] - sx) / FRAME_W * (drag.view.x1 - drag.view.x0);
        const dy = (at[1] - sy) / FRAME_H * (drag.view.y1 - drag.view.y0);
        view = { x0: drag.view.x0 - dx, x1: drag.view.x1 - dx,
                 y0: drag.view.y0 + dy, y1: drag.view.y1 + dy };
        requestDraw(true);
      } else {
        drag.path.push(at);
        requestDraw(false);
      }
    });

    mapCanvas.addEventListener("pointerup", (event) => {
      if (!drag) return;
      const gesture = drag;
      drag = null;
      const at = framePoint(event);
      if (!gesture.moved) {  // a click: select the point under the pointer (shift toggles)
        const i = pick(at[0], at[1]);
        if (i >= 0) {
          if (gesture.shift) {
            selected[i] ^= 1;
            selectionChanged();
          } else {
            select([i]);
          }
          inspect(i);
        }
        requestDraw(false);
      } else if (gesture.tool === "box") {
        const [ax, ay] = gesture.start;
        lastBox = [dataX(ax), dataY(ay), dataX(at[0]), dataY(at[1])];
        selectBox(...lastBox, gesture.shift);
      } else if (gesture.tool === "lasso") {
        gesture.path.push(at);
        lastLasso = gesture.path.map(([x, y]) => [dataX(x), dataY(y)]);
        if (lastLasso.length >= 3) selectPolygon(lastLasso.flat(), gesture.shift);
        else requestDraw(false);
      } else {
        requestDraw(true);
      }
    });

    mapCanvas.addEventListener("pointerleave", () => {
      tooltip.hidden = true;
      if (hovered >= 0) {
        hovered = -1;
        requestDraw(false);
      }
    });

    mapCanvas.addEventListener("wheel", (event) => {
      event.preventDefault();
      const [fx, fy] = framePoint(event);
      const x = dataX(fx), y = dataY(fy);
      const factor = Math.exp(event.deltaY * 0.0015);  // > 1 zooms out
      const width = (view.x1 - view.x0) * factor, height = (view.y1 - view.y0) * factor;
      const homeWidth = HOME.x1 - HOME.x0;
      if (width > homeWidth * 4 || width < homeWidth * 1e-5) return;
      view = { x0: x - (x - view.x0) * factor, x1: x - (x - view.x0) * factor + width,
               y0: y - (y - view.y0) * factor, y1: y - (y - view.y0) * factor + height };
      requestDraw(true);
    }, { passive: false });

    for (const radio of document.querySelectorAll('input[name="dm-tool"]')) {
      radio.addEventListener("change", () => mapCanvas.classList.toggle("dm-pan", tool() === "pan"));
    }
    $("dm-reset").addEventListener("click", () => {
      view = { ...HOME };
      requestDraw(true);
    });
    $("dm-clear").addEventListener("click", () => select([]));

    // ----------------------------------------------------------------------------------------
    // filters: given label, region, score ranges

    const labelFilter = $("dm-label-filter");
    classNames.forEach((name, k) => {
      const option = el("option", name);
      option.value = String(k);
      labelFilter.append(option);
    });
    const regionBoxes = config.regions.map((name, k) => {
      const box = el("input");
      box.type = "checkbox";
      box.checked = true;
      box.value = String(k);
      const label = el("label");
      label.append(box, ` ${name}`);
      $("dm-region-filter").append(label);
      return box;
    });
    const RANGES = [["confidence", confidence], ["variability", variability],
                    ["correctness", correctness], ["forgetfulness", forgetfulness]];
    const rangeInputs = RANGES.map(([name]) => {
      const label = el("label", name);
      const inputs = ["min", "max"].map((end) => {
        const input = el("input");
        input.type = "number";
        input.step = "any";
        input.placeholder = end;
        input.setAttribute("aria-label", `${name} ${end}`);
        label.append(input);
        return input;
      });
      $("dm-score-filter").append(label);
      return inputs;
    });

    function bound(input, fallback) {
      const value = input.value.trim() === "" ? NaN : Number(input.value);
      return Number.isFinite(value) ? value : fallback;
    }

    function applyFilters() {
      const classes = new Uint8Array(classNames.length);
      const chosen = [...labelFilter.selectedOptions].map((o) => Number(o.value));
      if (chosen.length === 0) classes.fill(1);
      for (const k of chosen) classes[k] = 1;
      const regions = regionBoxes.map((box) => (box.checked ? 1 : 0));
      const ranges = RANGES.map(([, values], k) => [values, bound(rangeInputs[k][0], -Infinity),
                                                    bound(rangeInputs[k][1], Infinity)])
        .filter(([, lo, hi]) => lo > -Infinity || hi < Infinity);  // only the bounded ones
      shownCount = 0;
      for (let i = 0; i < N; i++) {
        let keep = classes[gold[i]] & regions[region[i]];
        for (let r = 0; keep && r < ranges.length; r++) {
          const v = ranges[r][0][i];
          keep = v >= ranges[r][1] && v <= ranges[r][2] ? 1 : 0;
        }
        shown[i] = keep;
        selected[i] &= keep;
        shownCount += keep;
      }
      $("dm-filter-status").textContent =
        `${fmtInt(shownCount)} of ${fmtInt(N)} points pass the filters`;
      if (inspected >= 0 && !shown[inspected]) inspect(-1);
      countShown();
      updateLegend();
      selectionChanged();
    }

    labelFilter.addEventListener("change", applyFilters);
    $("dm-label-all").addEventListener("click", () => {
      for (const option of labelFilter.options) option.selected = false;
      applyFilters();
    });
    for (const box of regionBoxes) box.addEventListener("change", applyFilters);
    let rangeTimer = 0;
    for (const input of rangeInputs.flat()) {
      input.addEventListener("input", () => {  // typing: apply once the user pauses
        clearTimeout(rangeTimer);
        rangeTimer = setTimeout(applyFilters, 250);
      });
      input.addEventListener("change", () => {
        clearTimeout(rangeTimer);
        applyFilters();
      });
    }

    // ----------------------------------------------------------------------------------------
    // find ids

    /** The row of ``id`` (a BigInt) in the id-sorted column, or -1. */
    function rowOf(id) {
      let lo = 0, hi = N - 1;
      while (lo <= hi) {
        const mid = (lo + hi) >>> 1;
        if (ids[mid] === id) return mid;
        if (ids[mid] < id) lo = mid + 1;
        else hi = mid - 1;
      }
      return -1;
    }

    $("dm-find").addEventListener("change", (event) => {
      const tokens = event.target.value.split(/[\s,;]+/).filter((t) => t.length > 0);
      const status = $("dm-find-status");
      if (tokens.length === 0) {
        status.textContent = "";
        return;
      }
      const found = [], hidden = [], missing = [];
      for (const token of tokens) {
        const row = /^[+-]?\d+$/.test(token) ? rowOf(BigInt(token)) : -1;
        if (row < 0) missing.push(token);
        else if (!shown[row]) hidden.push(token);
        else found.push(row);
      }
      select(found);
      if (found.length) inspect(Math.min(...found));
      let text = `${found.length} of ${tokens.length} found and selected`;
      if (hidden.length) text += `; hidden by the filters: ${hidden.slice(0, 10).join(", ")}`;
      if (missing.length) text += `; not on the page: ${missing.slice(0, 10).join(", ")}`;
      status.textContent = text;
    });

    // ----------------------------------------------------------------------------------------
    // the selection table: one page of rows at a time

    const PAGE_ROWS = 100;
    let page = 0;
    const COLUMNS = [
      ["id", (i) => String(ids[i]), true],
      ["given", (i) => classNames[gold[i]]],
      ["most predicted", (i) => classNames[predicted[i]]],
      ["region", (i) => config.regions[region[i]]],
      ["confidence", (i) => confidence[i].toFixed(3), true],
      ["variability", (i) => variability[i].toFixed(3), true],
      ["correctness", (i) => correctness[i].toFixed(2), true],
      ["forgetfulness", (i) => (neverLearned && neverLearned[i] ? "never learned"
                                                              : String(forgetfulness[i])), true],
      ...(flipped ? [["label", (i) => (flipped[i] ? "flipped" : "kept")]] : []),
      ["decision", (i) => (decisions.has(i) ? decisionText(decisions.get(i)) : ""), false,
       "dm-note"],
    ];
    $("dm-table-head").append(...COLUMNS.map(([name]) => el("th", name)));

    function renderTable() {
      const pages = Math.max(1, Math.ceil(selectedList.length / PAGE_ROWS));
      page = Math.min(page, pages - 1);
      const first = page * PAGE_ROWS, last = Math.min(selectedList.length, first + PAGE_ROWS);
      const rows = [];
      for (let k = first; k < last; k++) {
        const i = selectedList[k];
        const tr = el("tr", undefined, i === inspected ? "dm-current" : "");
        tr.dataset.row = String(i);
        for (const [, value, numeric, className] of COLUMNS) {
          tr.append(el("td", value(i), numeric ? "dm-num" : className));
        }
        rows.push(tr);
      }
      $("dm-table-body").replaceChildren(...rows);
      $("dm-page-status").textContent = selectedList.length === 0 ? ""
        : `rows ${fmtInt(first + 1)}\u2013${fmtInt(last)} of ${fmtInt(selectedList.length)}`;
      $("dm-prev").disabled = page === 0;
      $("dm-next").disabled = page >= pages - 1;
    }

    $("dm-table-body").addEventListener("click", (event) => {
      const tr = event.target.closest("tr");
      if (tr) inspect(Number(tr.dataset.row));
    });
    $("dm-prev").addEventListener("click", () => { page--; renderTable(); });
    $("dm-next").addEventListener("click", () => { page++; renderTable(); });

    // ----------------------------------------------------------------------------------------
    // downloads

    function download(text, filename) {
      const url = URL.createObjectURL(new Blob([text], { type: "text/csv" }));
      const link = el("a");
      link.href = url;
      link.download = filename;
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 1000);
    }

    $("dm-download-ids").addEventListener("click", () => {
      const lines = Array.from(selectedList, (i) => `${ids[i]}\n`);
      download("id\n" + lines.join(""), config.files.selection);
    });

    /** A corrections.csv label, note or reviewer field (csv_cell in builder.py): a leading
     * formula character or quote gets one "'" unless the value is a negative integer such as -1
     * (datamap.io.guard_cell; the reader drops one "'" followed by one of them), then RFC 4180
     * quoting as Python's csv module. */
    const PLAIN_NUMBER = /^-[1-9][0-9]{0,14}$/;
    function csvCell(value) {
      const guard = /^[=+\-@\t\r']/.test(value) && !PLAIN_NUMBER.test(value);
      let text = guard ? `'${value}` : value;
      if (/[",\r\n]/.test(text)) text = `"${text.replaceAll('"', '""')}"`;
      return text;
    }

    function correctionLine(id, d) {
      const action = config.actions[d.action];
      const label = action === "relabel" ? classNames[d.label] : "";
      return `${id},${action},${csvCell(label)},${csvCell(d.note)},${csvCell(d.reviewer)}\n`;
    }

    $("dm-download-corrections").addEventListener("click", () => {
      const onMap = [...decisions.keys()].sort((a, b) => a - b);  // rows ascend with ids
      const lines = ["id,action,label,note,reviewer\n"];
      let k = 0;
      for (const row of onMap) {
        while (k < offMap.length && offMap[k].id < ids[row]) {
          lines.push(correctionLine(offMap[k].id, offMap[k]));
          k++;
        }
        lines.push(correctionLine(ids[row], decisions.get(row)));
      }
      for (; k < offMap.length; k++) lines.push(correctionLine(offMap[k].id, offMap[k]));
      download(lines.join(""), config.files.corrections);
    });

    // ----------------------------------------------------------------------------------------
    // review decisions

    const relabel = $("dm-relabel");
    classNames.forEach((name, k) => {
      const option = el("option", name);
      option.value = String(k);
      relabel.append(option);
    });
    $("dm-action").addEventListener("change", (event) => {
      relabel.disabled = event.target.value !== "relabel";
    });

    function reviewStatus(message) {
      const off = offMap.length
        ? ` (${fmtInt(offMap.length)} of them about examples not on this map, kept)` : "";
      const total = decisions.size + offMap.length;
      $("dm-review-status").textContent = `${message}${fmtInt(total)} decisions in all${off}.`;
    }

    $("dm-apply").addEventListener("click", () => {
      const action = $("dm-action").value;
      const code = config.actions.indexOf(action);
      const decision = { action: code, label: action === "relabel" ? Number(relabel.value) : -1,
                         note: $("dm-note").value, reviewer: $("dm-reviewer").value };
      for (const i of selectedList) {
        if (action === "clear") decisions.delete(i);
        else decisions.set(i, decision);
        decisionCode[i] = code + 1;  // "clear": indexOf is -1, code 0 (none)
      }
      const what = action === "clear" ? "Cleared the decisions of"
        : `Recorded ${action === "relabel" ? `relabel to ${iso(classNames[decision.label])}` : action} for`;
      reviewStatus(`${what} ${fmtInt(selectedList.length)} examples; `);
      if (colouring.key === "decision") recolour();
      renderTable();
      if (inspected >= 0) inspect(inspected);
      requestDraw(true);
    });

    // ----------------------------------------------------------------------------------------
    // colour-by control and legend

    for (const c of colourings) {
      const radio = el("input");
      radio.type = "radio";
      radio.name = "dm-colour";
      radio.value = c.key;
      radio.checked = c === colouring;
      radio.addEventListener("change", () => {
        colouring = c;
        recolour();
        requestDraw(true);
      });
      const label = el("label");
      label.append(radio, ` ${c.title}`);
      $("dm-colour-by").append(label);
    }

    function updateLegend() {
      const counts = new Float64Array(colouring.labels.length);
      for (let i = 0; i < N; i++) if (shown[i]) counts[colourCode[i]]++;
      const items = colouring.labels.map((label, k) => {
        const swatch = el("span", undefined, "dm-swatch");
        swatch.style.background = colouring.colours[k];
        const item = el("li");
        item.append(swatch, `${label} (${fmtInt(counts[k])})`);
        return item;
      });
      $("dm-legend").replaceChildren(el("li", `${colouring.title}:`), ...items);
    }

    // ----------------------------------------------------------------------------------------
    // header, regions, first frame

    $("dm-title").textContent = config.title;
    const levels = config.preview && config.preview.bits === 4
      ? " (thumbnails at 16 levels per channel, to keep the page small)" : "";
    $("dm-shown").textContent = `Showing all ${fmtInt(N)} examples${levels}.`;
    $("dm-region-rule").textContent = config.regionRule;
    const regionCounts = new Float64Array(config.regions.length);
    for (let i = 0; i < N; i++) regionCounts[region[i]]++;
    $("dm-region-counts").replaceChildren(...config.regions.map((name, k) => el(
      "li", `${name}: ${fmtInt(regionCounts[k])} (${(100 * regionCounts[k] / N).toFixed(1)} %)`)));
    $("dm-filter-status").textContent = `${fmtInt(N)} of ${fmtInt(N)} points pass the filters`;
    if (decisions.size + offMap.length) reviewStatus("Prior decisions loaded: ");

    recolour();
    countShown();
    selectionChanged();
    resize();
    window.addEventListener("resize", () => {
      if ((window.devicePixelRatio || 1) !== dpr) resize();
    });

    // For scripts and tests driving the page (read-only).
    window.dataMap = Object.freeze({
      get frames() { return frames; },
      get firstRender() { return firstRender; },
      /** Data coordinates -> client (viewport) coordinates of the map. */
      toScreen(x, y) {
        const box = mapCanvas.getBoundingClientRect();
        return [box.left + MARGIN.left + frameX(x), box.top + MARGIN.top + frameY(y)];
      },
      /** Client coordinates -> data coordinates. */
      toData(clientX, clientY) {
        const box = mapCanvas.getBoundingClientRect();
        return [dataX(clientX - box.left - MARGIN.left), dataY(clientY - box.top - MARGIN.top)];
      },
      /** The frame (plot area) in client coordinates. */
      frame() {
        const box = mapCanvas.getBoundingClientRect();
        return { x: box.left + MARGIN.left, y: box.top + MARGIN.top, width: FRAME_W,
                 height: FRAME_H };
      },
      /** The last box ([x0, y0, x1, y1]) and lasso ([[x, y], ...]) selected, in data units. */
      lastBox: () => (lastBox ? lastBox.slice() : null),
      lastLasso: () => lastLasso.map((p) => p.slice()),
      /** The marginal histograms' counts: shown points (x, y) and selected ones (selX, selY). */
      histograms: () => Object.fromEntries(Object.entries(hist).map(([k, v]) => [k, [...v]])),
      view: () => ({ ...view }),
    });
  }

  load().then(start).catch((error) => {
    $("dm-shown").textContent = `This page could not load its data: ${error}`;
    document.body.dataset.state = "failed";
    throw error;
  });
})();
