// Draw a photo with its faces (boxes, five keypoints, labels) on a canvas.
const COLORS = ["#1f8a5b", "#d73a49", "#0366d6", "#e36209", "#6f42c1", "#22863a"];

export async function loadBitmap(file) {
  return await createImageBitmap(file, { imageOrientation: "from-image" });
}

export function drawFaces(canvas, bitmap, faces, labels = []) {
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(bitmap, 0, 0);
  const lw = Math.max(2, Math.round(Math.max(bitmap.width, bitmap.height) / 400));
  faces.forEach((face, i) => {
    const color = COLORS[i % COLORS.length];
    const b = face.box;
    ctx.lineWidth = lw;
    ctx.strokeStyle = color;
    ctx.strokeRect(b.x1, b.y1, b.x2 - b.x1, b.y2 - b.y1);
    ctx.fillStyle = color;
    for (const [x, y] of face.landmarks || []) {
      ctx.beginPath(); ctx.arc(x, y, lw * 1.5, 0, 2 * Math.PI); ctx.fill();
    }
    const text = labels[i] !== undefined ? labels[i] : `${i + 1}`;
    ctx.font = `${Math.max(12, lw * 7)}px sans-serif`;
    ctx.fillText(text, b.x1, Math.max(12, b.y1 - lw * 2));
  });
  canvas.dataset.faces = String(faces.length);
}
