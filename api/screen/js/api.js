// The API as the page calls it: always with the token of this tab (sessionStorage, never a URL
// or a log), so the page can never read more than the token's scope.

const KEY = "citysense.token";

export const token = {
  get: () => sessionStorage.getItem(KEY),
  set: (value) => sessionStorage.setItem(KEY, value),
  clear: () => sessionStorage.removeItem(KEY),
};

export class ApiError extends Error {
  constructor(status, detail) {
    super(`${status}: ${typeof detail === "string" ? detail : JSON.stringify(detail)}`);
    this.status = status;
  }
}

export function headers(extra = {}) {
  return { Authorization: `Bearer ${token.get()}`, ...extra };
}

export async function api(path, { params, method = "GET", body } = {}) {
  const query = params ? `?${new URLSearchParams(params)}` : "";
  const response = await fetch(path + query, {
    method,
    headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }),
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
  });
  if (!response.ok) {
    const detail = await response.json().then((b) => b.detail, () => response.statusText);
    throw new ApiError(response.status, detail);
  }
  return response.json();
}
