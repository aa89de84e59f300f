// The one place the page talks to the server: fetch with the API key, errors as ApiError.
export class ApiError extends Error {
  constructor(status, body) {
    const err = (body && body.error) || {};
    super(err.message || `HTTP ${status}`);
    this.status = status;
    this.code = err.code || "http_error";
    this.details = err.details || {};
    this.requestId = body && body.request_id;
  }
}

class Api {
  #key = "";  // kept only in this private field: never in storage, never in the URL

  setKey(key) { this.#key = (key || "").trim(); }
  hasKey() { return this.#key.length > 0; }

  async request(method, path, { form, json, raw } = {}) {
    const headers = {};
    if (this.#key) headers["Authorization"] = `Bearer ${this.#key}`;
    let body;
    if (form) body = form;
    else if (json !== undefined) { headers["Content-Type"] = "application/json"; body = JSON.stringify(json); }
    const res = await fetch(path, { method, headers, body, credentials: "omit", cache: "no-store" });
    if (raw && res.ok) return res;
    const type = res.headers.get("content-type") || "";
    const data = type.includes("application/json") ? await res.json() : null;
    if (!res.ok) throw new ApiError(res.status, data);
    return data;
  }
  get(path) { return this.request("GET", path); }
  post(path, opts) { return this.request("POST", path, opts); }
  patch(path, json) { return this.request("PATCH", path, { json }); }
  del(path) { return this.request("DELETE", path); }
  async blob(path) { const res = await this.request("GET", path, { raw: true }); return res.blob(); }
}

export const api = new Api();
