// facelab web app: a hash router over pages; each page module exports render(main).
import { api } from "./api.js";

const PAGES = {
  detect: () => import("./pages/detect.js"),
  compare: () => import("./pages/compare.js"),
  search: () => import("./pages/search.js"),
  people: () => import("./pages/people.js"),
  albums: () => import("./pages/albums.js"),
  index: () => import("./pages/index.js"),
  swap: () => import("./pages/swap.js"),
  system: () => import("./pages/system.js"),
};

async function route() {
  const name = (location.hash || "#detect").slice(1).split("/")[0];
  const page = PAGES[name] ? name : "detect";
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.page === page);
  const main = document.getElementById("main");
  main.replaceChildren();
  main.dataset.page = page;
  const module = await PAGES[page]();
  await module.render(main);
}

function setupKey() {
  const form = document.getElementById("key-form");
  const input = document.getElementById("api-key");
  const state = document.getElementById("key-state");
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    api.setKey(input.value);
    input.value = "";
    state.textContent = api.hasKey() ? "key set" : "no key";
    route();
  });
}

async function health() {
  try {
    const h = await api.get("/v1/health");
    document.getElementById("key-state").textContent = h.auth_enabled ? "a key is required" : "no key needed";
  } catch (err) {
    document.getElementById("key-state").textContent = `server: ${err.code}`;
  }
}

setupKey();
window.addEventListener("hashchange", route);
health().then(route);
