// The console's service worker: the page's own files for when the network is gone (an
// offline shell that says so and reconnects by itself), and a click on an alarm
// notification brings the console to the front. The API (/v1/...) is never cached: what
// the console shows about fires always comes from the server, or not at all.

// Every file of api/console/ but this one (tests/test_console_api.py checks the list).
const CACHE = "fg-console-4";
const SHELL = ["./", "index.html", "console.css", "console.js", "cards.js", "alarm.js",
               "field.js", "duty.js", "i18n.js", "map.js", "ui.js", "alarm.wav", "icon.svg",
               "manifest.webmanifest"];

self.addEventListener("install", (ev) => {
  ev.waitUntil(caches.open(CACHE).then((c) => c.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (ev) => {
  ev.waitUntil(caches.keys()
    .then((keys) => Promise.all(keys.filter((k) => k !== CACHE).map((k) => caches.delete(k))))
    .then(() => self.clients.claim()));
});

// The network first (a new release shows at once), the cache when there is no network.
self.addEventListener("fetch", (ev) => {
  const url = new URL(ev.request.url);
  const scope = new URL(self.registration.scope);
  if (ev.request.method !== "GET" || url.origin !== scope.origin
      || !url.pathname.startsWith(scope.pathname)) return;
  ev.respondWith(fetch(ev.request).then((response) => {
    if (response.status === 200 && !ev.request.headers.has("range")) {
      const copy = response.clone();
      caches.open(CACHE).then((c) => c.put(ev.request, copy)).catch(() => {});
    }
    return response;
  }).catch(() => caches.match(ev.request, { ignoreSearch: true })
    .then((hit) => hit || caches.match("index.html"))));
});

self.addEventListener("notificationclick", (ev) => {
  ev.notification.close();
  ev.waitUntil(self.clients.matchAll({ type: "window", includeUncontrolled: true })
    .then((windows) => {
      const open = windows.find((w) => w.url.startsWith(self.registration.scope));
      return open ? open.focus() : self.clients.openWindow(self.registration.scope);
    }));
});
