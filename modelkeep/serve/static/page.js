// The try-it form of a modelkeep model page (modelkeep/serve/page.py writes the form; this drives it).
// It calls POST /v1/models/NAME/predict on this server with fetch() and shows the answer. Every text from the
// server is written with textContent, never as HTML. The API key stays in this tab's sessionStorage.
(() => {
  "use strict";
  const KEY_STORAGE = "modelkeep-api-key";
  const form = document.getElementById("try-it-form");
  if (!form) return;
  const kind = form.dataset.kind;
  const shape = JSON.parse(form.dataset.shape);
  const statusLine = document.getElementById("status");
  const result = document.getElementById("result");
  const keyInput = document.getElementById("api-key");
  const fileInput = document.getElementById("file");

  keyInput.value = sessionStorage.getItem(KEY_STORAGE) || "";
  keyInput.addEventListener("input", () => {
    const key = keyInput.value.trim();
    if (key) sessionStorage.setItem(KEY_STORAGE, key); else sessionStorage.removeItem(KEY_STORAGE);
  });

  function say(text, isError) {
    statusLine.textContent = text;
    statusLine.className = isError ? "error" : "";
  }

  function element(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = text;
    if (className) node.className = className;
    return node;
  }

  async function predict(body, isJson) {
    const headers = {};
    const key = keyInput.value.trim();
    if (key) headers["Authorization"] = "Bearer " + key;
    if (isJson) headers["Content-Type"] = "application/json";
    say("Predicting…");
    result.replaceChildren();
    let response, answer;
    try {
      response = await fetch(form.dataset.endpoint + "?top=10", {method: "POST", headers, body});
      answer = await response.json();
    } catch (error) {
      say("The server could not be reached or did not answer JSON: " + error, true);
      return;
    }
    if (!response.ok) {
      const hint = response.status === 401 ? " Enter the server's API key above." : "";
      say(`Refused (${response.status}): ${answer.error || "no reason given"}.${hint}`, true);
      return;
    }
    say(`Answered by ${answer.model_name} version ${answer.model_version}.`);
    show(answer.predictions[0]);
  }

  function show(record) {
    if (Array.isArray(record.top) && record.top.length && !Array.isArray(record.top[0])) {
      const headline = element("p", "", "headline");
      headline.append("Predicted ", element("strong", String(record.label), "predicted-label"),
                      ` with probability ${Number(record.probability).toFixed(4)}`);
      const table = element("table", undefined, "probabilities");
      const head = element("tr");
      head.append(element("th", "class"), element("th", "probability"), element("th", ""));
      const thead = table.appendChild(element("thead"));
      thead.append(head);
      const body = table.appendChild(element("tbody"));
      for (const entry of record.top) {
        const row = element("tr");
        row.dataset.label = String(entry.label);
        row.dataset.probability = String(entry.probability);
        const bar = element("meter");
        bar.min = 0; bar.max = 1; bar.value = entry.probability;
        const barCell = element("td");
        barCell.append(bar);
        row.append(element("td", String(entry.label)), element("td", Number(entry.probability).toFixed(4), "number"),
                   barCell);
        body.append(row);
      }
      result.append(headline, table);
    } else if (record.value !== undefined) {
      const values = Array.isArray(record.value) ? record.value : [record.value];
      const line = element("p", "", "headline");
      line.append("Predicted value ", element("strong", values.map(v => v === null ? "null" : String(v)).join(", "),
                                               "predicted-value"));
      line.dataset.value = JSON.stringify(values);
      result.append(line);
    } else {
      result.append(element("pre", JSON.stringify(record, null, 2)));
    }
  }

  // ---- images: a canvas to draw on, shrunk to the model's size -----------------------------------------
  function setUpImage() {
    const [channels, height, width] = shape;
    const canvas = document.getElementById("canvas");
    const preview = document.getElementById("preview");
    const ink = document.getElementById("ink");
    const inkColour = document.getElementById("ink-colour");  // colour models only; grayscale ones draw white
    const context = canvas.getContext("2d", {willReadFrequently: true});
    const clear = () => {
      context.fillStyle = "#000";
      context.fillRect(0, 0, canvas.width, canvas.height);
      shrink();
    };
    let last = null;
    const at = event => {
      const box = canvas.getBoundingClientRect();
      return [(event.clientX - box.left) * canvas.width / box.width, (event.clientY - box.top) * canvas.height / box.height];
    };
    canvas.addEventListener("pointerdown", event => {
      canvas.setPointerCapture(event.pointerId);
      last = at(event);
      stroke(last, last);
    });
    canvas.addEventListener("pointermove", event => {
      if (last === null) return;
      const next = at(event);
      stroke(last, next);
      last = next;
    });
    const end = () => { if (last !== null) { last = null; shrink(); } };
    canvas.addEventListener("pointerup", end);
    canvas.addEventListener("pointercancel", end);
    function stroke(from, to) {
      context.strokeStyle = inkColour ? inkColour.value : "#fff";
      context.lineCap = context.lineJoin = "round";
      context.lineWidth = Math.max(18, 1.15 * canvas.width / Math.min(width, height));
      context.beginPath();
      context.moveTo(from[0], from[1]);
      context.lineTo(to[0], to[1]);
      context.stroke();
    }
    // Each model pixel is the mean of the canvas pixels over it (as the 8x8 digits were made from 32x32 bitmaps).
    function pixels() {
      const source = context.getImageData(0, 0, canvas.width, canvas.height).data;
      const out = [];
      for (let c = 0; c < channels; c++) out.push(Array.from({length: height}, () => new Array(width).fill(0)));
      for (let row = 0; row < height; row++) {
        const y0 = Math.floor(row * canvas.height / height), y1 = Math.floor((row + 1) * canvas.height / height);
        for (let col = 0; col < width; col++) {
          const x0 = Math.floor(col * canvas.width / width), x1 = Math.floor((col + 1) * canvas.width / width);
          const sums = [0, 0, 0];
          for (let y = y0; y < y1; y++) for (let x = x0; x < x1; x++) {
            const i = 4 * (y * canvas.width + x);
            sums[0] += source[i]; sums[1] += source[i + 1]; sums[2] += source[i + 2];
          }
          const area = (y1 - y0) * (x1 - x0);
          if (channels === 1) {
            out[0][row][col] = (0.299 * sums[0] + 0.587 * sums[1] + 0.114 * sums[2]) / area / 255;
          } else {
            for (let c = 0; c < 3; c++) out[c][row][col] = sums[c] / area / 255;
          }
        }
      }
      return out;
    }
    function shrink() {
      const values = pixels();
      const small = preview.getContext("2d");
      const image = small.createImageData(width, height);
      for (let row = 0; row < height; row++) for (let col = 0; col < width; col++) {
        const i = 4 * (row * width + col);
        for (let c = 0; c < 3; c++) image.data[i + c] = Math.round(255 * values[channels === 1 ? 0 : c][row][col]);
        image.data[i + 3] = 255;
      }
      small.putImageData(image, 0, 0);
    }
    fileInput.accept = "image/*";
    fileInput.addEventListener("change", async () => {
      const file = fileInput.files[0];
      if (!file) return;
      try {
        const bitmap = await createImageBitmap(file);
        clear();
        // Stretched to the whole canvas, as the server resizes an upload to the model's size (the canvas has the
        // model's proportions). A picture smaller than the canvas keeps its pixels as blocks; a larger one is
        // smoothed as it shrinks, then each model pixel is the mean over its block.
        const enlarging = bitmap.width <= canvas.width && bitmap.height <= canvas.height;
        context.imageSmoothingEnabled = !enlarging;
        context.imageSmoothingQuality = "high";
        context.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
        shrink();
        say(`Drew ${file.name} on the canvas: Predict sends it as the model sees it, Predict the file sends the file.`);
      } catch (error) {
        say("This file cannot be shown as a picture here; Predict the file still sends it to the server.", true);
      }
    });
    document.getElementById("clear").addEventListener("click", clear);
    clear();
    return () => {
      const white = Number(ink.value);
      if (!Number.isFinite(white)) throw new Error("the input value of white must be a number");
      return pixels().map(plane => plane.map(line => line.map(v => v * white)));
    };
  }

  // ---- rows of numbers, text, JSON ---------------------------------------------------------------------
  function setUpRow() {
    const cells = Array.from(form.querySelectorAll("input.cell"));
    const csv = document.getElementById("csv");
    csv.addEventListener("change", () => {
      const values = csv.value.split(",");
      if (values.length === cells.length) cells.forEach((cell, i) => { cell.value = values[i].trim(); });
    });
    cells.forEach(cell => cell.addEventListener("input", () => { csv.value = ""; }));  // the cells win again
    fileInput.accept = ".csv,text/csv,text/plain";
    return () => {
      const texts = csv.value.trim() ? csv.value.split(",") : cells.map(cell => cell.value);
      if (texts.length !== shape[0]) throw new Error(`this model takes ${shape[0]} numbers; got ${texts.length}`);
      return texts.map((text, i) => {
        const value = Number(String(text).trim());
        if (String(text).trim() === "" || !Number.isFinite(value)) throw new Error(`value ${i} is not a number`);
        return value;
      });
    };
  }

  function setUpText() {
    const text = document.getElementById("text");
    return () => kind === "text" ? text.value : JSON.parse(text.value);
  }

  const read = kind === "image" ? setUpImage() : kind === "row" ? setUpRow() : setUpText();
  form.addEventListener("submit", event => {
    event.preventDefault();
    let instance;
    try {
      instance = read();
    } catch (error) {
      say(String(error.message || error), true);
      return;
    }
    predict(JSON.stringify({instances: [instance]}), true);
  });
  document.getElementById("predict-file").addEventListener("click", () => {
    const file = fileInput.files[0];
    if (!file) { say("Choose a file first.", true); return; }
    const body = new FormData();
    body.append("file", file);
    predict(body, false);
  });
})();
