// The building on a map (docs/console.md#the-map): a 3 × 3 block of tiles from the
// configured source (api.map_tiles) around the building, at api.map_zoom, with a pin. The
// server sends the position already in the tiles' datum (GCJ-02 for Amap and Tencent:
// devices/geo.py). A tile that does not load (no route to the tile server, a blocked
// host) puts the plain building line in the map's place: the address and the navigation
// links above still lead there.

import { t } from "./i18n.js";
import { el } from "./ui.js";

const TILE = 256;

// Web Mercator (the tiles of every web map): a position's fractional tile coordinates.
export function tileOf(lat, lon, zoom) {
  const n = 2 ** zoom;
  const rad = (lat * Math.PI) / 180;
  return { x: ((lon + 180) / 360) * n,
           y: ((1 - Math.log(Math.tan(rad) + 1 / Math.cos(rad)) / Math.PI) / 2) * n };
}

function plain(building) {
  return el("div", { class: "map-fallback", "data-state": "failed" },
    el("p", { class: "muted", text: t("map_unavailable") }),
    el("ul", { class: "lines" }, el("li", { "data-building": building.id },
      el("b", { text: building.address }),
      ` · ${building.id} · ${building.lat}, ${building.lon} (WGS-84)`)));
}

// The map, or null when no tile source is configured. `replace(node)` swaps it for the
// plain line when a tile fails.
export function mapOf(view, building, replace) {
  if (!view) return null;
  const { x, y } = tileOf(view.lat, view.lon, view.zoom);
  const cx = Math.floor(x), cy = Math.floor(y);
  const tiles = el("div", { class: "map-tiles" });
  // Inline style attributes are refused by the page's CSP; CSSOM properties are not.
  tiles.style.left = `calc(50% - ${(x - cx + 1) * TILE}px)`;
  tiles.style.top = `calc(50% - ${(y - cy + 1) * TILE}px)`;
  const box = el("div", { class: "map", role: "img", "data-state": "loading",
                          "data-tile": `${view.zoom}/${cx}/${cy}`,
                          "aria-label": t("map_label", { address: building.address }) },
                 tiles, el("span", { class: "map-pin", "aria-hidden": "true" }));
  let loaded = 0;
  for (let dy = -1; dy <= 1; dy += 1) {
    for (let dx = -1; dx <= 1; dx += 1) {
      const src = view.tiles.replaceAll("{z}", String(view.zoom))
        .replaceAll("{x}", String(cx + dx)).replaceAll("{y}", String(cy + dy));
      const img = el("img", { src, alt: "", draggable: "false", referrerpolicy: "no-referrer",
        onload: () => { loaded += 1; if (loaded === 9) box.dataset.state = "shown"; },
        onerror: () => { if (box.isConnected) replace(plain(building)); } });
      img.style.left = `${(dx + 1) * TILE}px`;
      img.style.top = `${(dy + 1) * TILE}px`;
      tiles.append(img);
    }
  }
  return box;
}
