// First-admin step of the sign-in page (with the setup secret): PUT /auth/password as JSON, then go where the user
// was heading (the server already reduced `next` to a path on this site).
const form = document.getElementById("first-admin");
if (form) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const error = form.querySelector(".error");
    const data = Object.fromEntries(new FormData(form));
    const response = await fetch("/auth/password", {
      method: "PUT",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ username: data.username, password: data.password, setup_secret: data.setup_secret }),
    });
    if (response.ok) {
      const next = form.dataset.next || "/";
      window.location.assign(next.startsWith("/") && !next.startsWith("//") ? next : "/");
      return;
    }
    const body = await response.json().catch(() => ({ error: "Request failed" }));
    error.textContent = body.error || "Request failed";
    error.hidden = false;
  });
}
