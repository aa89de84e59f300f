import { api } from "../api.js";
import { el, showError } from "../dom.js";

export async function render(main) {
  const box = el("section", { class: "card", id: "system" }, el("h2", { text: "System" }));
  main.append(box);
  try {
    const models = await api.get("/v1/models");
    box.append(el("h3", { text: `Pack ${models.pack} (threshold ${models.threshold ?? "–"})` }),
      el("table", {}, el("tbody", {}, models.models.map((m) => el("tr", {},
        el("td", { text: m.task }), el("td", { text: m.name }), el("td", { text: m.license }),
        el("td", { text: (m.providers || []).join(", ") }))))));
    const sys = await api.get("/v1/system");
    box.append(el("pre", { id: "system-json", text: JSON.stringify(sys, null, 2) }));
  } catch (err) {
    const msg = el("div");
    showError(msg, err);
    box.append(msg);
  }
}
