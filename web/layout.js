// Deterministic, append-only layout.
//
// A full build places groups on a ring sorted by name and each group's
// members on a sunflower spiral sorted by id, so the same data always gives
// the same picture. After that the layout only appends: a new member takes
// the lowest free slot of its group, a new group takes the next slot on an
// outer ring, and nobody already placed ever moves. That is what keeps the
// map readable while it updates several times a second.

const GOLDEN = Math.PI * (3 - Math.sqrt(5));
const PITCH = 1;
const GAP = 2.2 * PITCH;
// Groups on the ring reserve room to grow this much before they would
// start to overlap their neighbours.
const HEADROOM = 1.5;

const cmp = (a, b) => (a < b ? -1 : a > b ? 1 : 0);

function spiral(i) {
  if (i === 0) return [0, 0];
  const r = PITCH * Math.sqrt(i + 0.35);
  const t = i * GOLDEN;
  return [r * Math.cos(t), r * Math.sin(t)];
}

function reservedRadius(members) {
  return PITCH * (Math.sqrt(Math.ceil(members * HEADROOM)) + 0.9);
}

export class Layout {
  constructor() {
    this.reset();
  }

  reset() {
    this.groups = new Map();
    this.pos = new Map();
    this.extraGroups = 0;
    this.outerRadius = 0;
    this.extraRadius = reservedRadius(4);
  }

  // items: [{ id, group }]
  build(items) {
    this.reset();
    const byGroup = new Map();
    for (const it of items) {
      if (!byGroup.has(it.group)) byGroup.set(it.group, []);
      byGroup.get(it.group).push(it.id);
    }
    const keys = [...byGroup.keys()].sort(cmp);
    const radii = keys.map((k) => reservedRadius(byGroup.get(k).length));
    const centers = ringCenters(radii);
    keys.forEach((k, i) => {
      const g = { key: k, cx: centers[i][0], cy: centers[i][1], reserved: radii[i], slots: [] };
      this.groups.set(k, g);
      for (const id of byGroup.get(k).sort(cmp)) this.#assign(g, id);
    });
    let outer = 0;
    keys.forEach((k, i) => {
      outer = Math.max(outer, Math.hypot(centers[i][0], centers[i][1]) + radii[i]);
    });
    this.outerRadius = outer;
  }

  // Position for a node that arrived after the build; stable if already placed.
  place(id, group) {
    const have = this.pos.get(id);
    if (have) return have;
    let g = this.groups.get(group);
    if (!g) g = this.#newGroup(group);
    return this.#assign(g, id);
  }

  release(id) {
    const p = this.pos.get(id);
    if (!p) return;
    const g = this.groups.get(p.group);
    if (g) g.slots[p.slot] = null;
    this.pos.delete(id);
  }

  get(id) {
    return this.pos.get(id);
  }

  // Circles drawn behind each group: centre plus the radius that currently
  // encloses its members.
  groupShapes() {
    const out = [];
    for (const g of this.groups.values()) {
      let r = 0;
      let n = 0;
      g.slots.forEach((id, i) => {
        if (id === null) return;
        n++;
        const [dx, dy] = spiral(i);
        r = Math.max(r, Math.hypot(dx, dy));
      });
      if (n) out.push({ key: g.key, x: g.cx, y: g.cy, r: r + 0.75 * PITCH, reserved: g.reserved, members: n });
    }
    return out;
  }

  #assign(g, id) {
    let slot = g.slots.indexOf(null);
    if (slot < 0) slot = g.slots.length;
    g.slots[slot] = id;
    const [dx, dy] = spiral(slot);
    const p = { x: g.cx + dx, y: g.cy + dy, group: g.key, slot };
    this.pos.set(id, p);
    return p;
  }

  #newGroup(key) {
    // Eight groups per outer ring, each ring further out, offset so rings
    // do not line up radially.
    const k = this.extraGroups++;
    const ring = Math.floor(k / 8);
    const step = 2 * this.extraRadius + GAP;
    const radius = (this.outerRadius || 0) + GAP + this.extraRadius + ring * step;
    const ringCount = Math.max(8, Math.floor((2 * Math.PI * radius) / step));
    const angle = -Math.PI / 2 + ((k % 8) * 2 * Math.PI) / Math.min(8, ringCount) + ring * (Math.PI / 8);
    const g = { key, cx: radius * Math.cos(angle), cy: radius * Math.sin(angle), reserved: this.extraRadius, slots: [] };
    this.groups.set(key, g);
    return g;
  }
}

// Centres on a ring, clockwise from the top, each group getting an arc
// proportional to its size; the ring radius is the smallest one where no two
// neighbours overlap.
function ringCenters(radii) {
  const n = radii.length;
  if (n === 0) return [];
  if (n === 1) return [[0, 0]];
  const widths = radii.map((r) => 2 * r + GAP);
  const total = widths.reduce((a, b) => a + b, 0);
  const angles = [];
  let acc = 0;
  for (const w of widths) {
    angles.push(-Math.PI / 2 + (2 * Math.PI * (acc + w / 2)) / total);
    acc += w;
  }
  let R = total / (2 * Math.PI);
  for (let i = 0; i < n; i++) {
    const j = (i + 1) % n;
    let d = angles[j] - angles[i];
    if (d <= 0) d += 2 * Math.PI;
    const need = (radii[i] + radii[j] + GAP) / (2 * Math.sin(Math.min(d, Math.PI) / 2));
    R = Math.max(R, need);
  }
  return angles.map((a) => [R * Math.cos(a), R * Math.sin(a)]);
}
