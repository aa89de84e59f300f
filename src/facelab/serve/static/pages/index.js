import { api } from "../api.js";
import { collectionPicker, currentCollection } from "../collections.js";
import { el, showError } from "../dom.js";

export async function render(main) {
  const msg = el("div", { id: "index-msg" });
  const jobs = el("div", { id: "jobs" });
  const picker = await collectionPicker(() => {});
  const rootSelect = el("select", { id: "index-root" });
  const path = el("input", { id: "index-path", value: ".", placeholder: "folder inside the root" });
  const form = el("form", { class: "row", id: "index-form" },
    el("label", { for: "index-root", text: "Library" }), rootSelect, path,
    el("button", { type: "submit", id: "index-run", text: "Index" }));
  try {
    const lib = await api.get("/v1/library");
    rootSelect.replaceChildren(...lib.roots.map((r) => el("option", { value: String(r.root), text: r.name })));
    if (!lib.roots.length) msg.replaceChildren(el("p", { class: "muted", text: "no library folder is configured on the server (--library DIR)" }));
  } catch (err) { showError(msg, err); }
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      await api.post("/v1/index", { json: { collection_id: currentCollection(), root: Number(rootSelect.value), paths: [path.value] } });
      await poll();
    } catch (err) { showError(msg, err); }
  });

  async function poll() {
    try {
      const res = await api.get("/v1/index");
      jobs.replaceChildren(...res.jobs.map(jobRow));
      if (res.jobs.some((j) => j.status === "queued" || j.status === "running")) setTimeout(poll, 700);
    } catch (err) { showError(jobs, err); }
  }

  function jobRow(j) {
    const p = j.progress;
    const pct = p.total ? Math.round((100 * p.done) / p.total) : (j.status === "done" ? 100 : 0);
    const bar = el("div", { class: "bar" }, el("div"));
    bar.firstChild.style.width = `${pct}%`;  // CSSOM, allowed by the CSP
    return el("div", { class: "person job", "data-status": j.status },
      el("strong", { text: `${j.collection_id}: ${j.paths.join(", ")}` }),
      el("div", { class: "job-status", text: `${j.status} — ${p.done}/${p.total} images, ${p.faces} faces, ${p.errors} errors, ${p.images_per_s} images/s` }),
      bar, j.error ? el("p", { class: "error", text: j.error }) : null);
  }

  main.append(el("section", { class: "card" }, el("h2", { text: "Index jobs" }), picker, form, msg, jobs));
  await poll();
}
