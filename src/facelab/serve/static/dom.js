// Tiny DOM helpers. Text always goes through textContent: names from the server are never HTML.
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function showError(target, err) {
  const where = err && err.code ? ` (${err.code}${err.status ? ", HTTP " + err.status : ""})` : "";
  target.replaceChildren(el("p", { class: "error", role: "alert", text: `${err.message || err}${where}` }));
}

export function fileInput(id, label, multiple = false) {
  return [el("label", { for: id, text: label }),
          el("input", { id, type: "file", accept: "image/jpeg,image/png,image/webp,image/bmp,image/tiff", multiple })];
}

export function fmt(x, digits = 3) { return x === null || x === undefined ? "–" : Number(x).toFixed(digits); }
