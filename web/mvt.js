// Mapbox Vector Tile (MVT 2.1) decoding for the operator console's low-zoom fleet layer.
//
// Why self-written: @mapbox/vector-tile ships only an ES module that imports
// '@mapbox/point-geometry' by bare name, which a browser cannot load without a bundler or an
// inline import map (the page's CSP forbids inline scripts). The protobuf wire format is read
// by the npm package `pbf` (its dist/pbf.js is a plain browser script: global `Pbf`); this file
// adds only the MVT schema on top (vector_tile.proto: Tile → Layer → Feature/Value, geometry
// commands MoveTo/LineTo/ClosePath with zig-zag deltas).
//
// FleetMvt.decode(bytes) → { layerName: { extent, features: [{ id, type, properties,
// geometry }] } } where type is "Point" | "LineString" | "Polygon" (or "Unknown") and geometry
// is a list of parts, each a list of [x, y] in tile units (0..extent). Tested by
// tests/test_operator_live.py against tiles made by PostGIS ST_AsMVT.
(function (root) {
  "use strict";
  const TYPES = ["Unknown", "Point", "LineString", "Polygon"];
  const MAX_PARTS = 1 << 20; // a corrupt command count must not make the loop run forever

  // Value: one of string (1), float (2), double (3), int64 (4), uint64 (5), sint64 (6), bool (7).
  function readValueField(tag, box, pbf) {
    box.value = tag === 1 ? pbf.readString()
      : tag === 2 ? pbf.readFloat()
      : tag === 3 ? pbf.readDouble()
      : tag === 4 ? pbf.readVarint(true)
      : tag === 5 ? pbf.readVarint()
      : tag === 6 ? pbf.readSVarint()
      : tag === 7 ? pbf.readBoolean()
      : box.value;
  }

  // Geometry commands → parts of [x, y]: MoveTo (1) starts a part, LineTo (2) extends it,
  // ClosePath (7) repeats its first point (a ring).
  function decodeGeometry(commands) {
    const parts = [];
    let part = null;
    let x = 0;
    let y = 0;
    let i = 0;
    while (i < commands.length) {
      const command = commands[i] & 0x7;
      const count = commands[i] >>> 3;
      i += 1;
      if (command === 7) {
        if (part && part.length) part.push([part[0][0], part[0][1]]);
        continue;
      }
      if ((command !== 1 && command !== 2) || count > MAX_PARTS) break;
      for (let k = 0; k < count && i + 1 < commands.length; k += 1) {
        x += (commands[i] >>> 1) ^ -(commands[i] & 1);
        y += (commands[i + 1] >>> 1) ^ -(commands[i + 1] & 1);
        i += 2;
        if (command === 1 || !part) { // each point of a multipoint is a part of its own
          part = [];
          parts.push(part);
        }
        part.push([x, y]);
      }
    }
    return parts;
  }

  // Feature: id (1), tags (2, packed key/value index pairs), type (3), geometry (4, packed).
  function readFeatureField(tag, raw, pbf) {
    if (tag === 1) raw.id = pbf.readVarint();
    else if (tag === 2) raw.tags = pbf.readPackedVarint();
    else if (tag === 3) raw.type = TYPES[pbf.readVarint()] || "Unknown";
    else if (tag === 4) raw.commands = pbf.readPackedVarint();
  }

  function readFeature(pbf, keys, values) {
    const raw = pbf.readMessage(readFeatureField, { id: null, type: "Unknown", tags: [], commands: [] });
    const properties = {};
    for (let i = 0; i + 1 < raw.tags.length; i += 2) {
      const key = keys[raw.tags[i]];
      if (key !== undefined && raw.tags[i + 1] < values.length) properties[key] = values[raw.tags[i + 1]];
    }
    return { id: raw.id, type: raw.type, properties, geometry: decodeGeometry(raw.commands) };
  }

  // Layer: name (1), features (2), keys (3), values (4), extent (5). A feature refers to keys and
  // values by index and may come before them: features are decoded once the layer is read.
  function readLayerField(tag, layer, pbf) {
    if (tag === 1) layer.name = pbf.readString();
    else if (tag === 2) layer.raw.push(pbf.pos);
    else if (tag === 3) layer.keys.push(pbf.readString());
    else if (tag === 4) layer.values.push(pbf.readMessage(readValueField, { value: null }).value);
    else if (tag === 5) layer.extent = pbf.readVarint();
  }

  function readLayer(pbf) {
    const layer = pbf.readMessage(readLayerField, { name: "", extent: 4096, raw: [], keys: [], values: [] });
    const after = pbf.pos;
    const features = layer.raw.map((pos) => {
      pbf.pos = pos;
      return readFeature(pbf, layer.keys, layer.values);
    });
    pbf.pos = after;
    return { name: layer.name, extent: layer.extent, features };
  }

  // Tile: layers (3).
  function decode(bytes) {
    const pbf = new root.Pbf.PbfReader(bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes));
    return pbf.readFields((tag, layers) => {
      if (tag === 3) {
        const layer = readLayer(pbf);
        layers[layer.name] = layer;
      }
    }, {});
  }

  root.FleetMvt = { decode, decodeGeometry };
})(typeof globalThis !== "undefined" ? globalThis : self);
