// The page of the taxi-duration service: a map of the TLC zones (GET /zones/shapes) and zone pickers
// (GET /zones) choose the ride; POST /predict answers. Nothing is loaded from outside the service.
'use strict';
const $ = (id) => document.getElementById(id);
const SVG = 'http://www.w3.org/2000/svg';
let boroughs = [], boroughOf = {}, choosing = 'pu';

function fillZones(boroughSelect, zoneSelect) {
  const b = boroughs.find((x) => x.name === boroughSelect.value);
  zoneSelect.replaceChildren(...(b ? b.zones : []).map((z) => new Option(z.name, String(z.id))));
}

function zoneName(end) {  // the chosen zone's name, as its list shows it
  const option = $(end + '-zone').selectedOptions[0];
  return option ? option.text : '';
}

function showHint() {  // what a click on the map does next, given what is chosen
  const b = (text) => Object.assign(document.createElement('b'), {textContent: text});
  if (choosing === 'do') $('map-hint').replaceChildren('From ', b(zoneName('pu')), ': now click the ', b('drop-off'), ' zone.');
  else $('map-hint').replaceChildren(b(zoneName('pu')), ' to ', b(zoneName('do')), '. Click a zone to choose a new ',
    b('pick-up'), '.');
}

function choose(end, zoneId, fromMap) {  // set the pick-up ('pu') or drop-off ('do') zone everywhere
  const bs = $(end + '-borough'), zs = $(end + '-zone');
  if (boroughOf[zoneId] && bs.value !== boroughOf[zoneId]) { bs.value = boroughOf[zoneId]; fillZones(bs, zs); }
  zs.value = String(zoneId);
  document.querySelectorAll(`#map path.${end}`).forEach((p) => p.classList.remove(end));
  const path = document.getElementById(`zone-${zoneId}`);
  if (path) path.classList.add(end);
  if (fromMap) choosing = end === 'pu' ? 'do' : 'pu';
  showHint();
  if (fromMap && end === 'do') predict();
}

function setupPicker(end, zoneId) {
  const bs = $(end + '-borough'), zs = $(end + '-zone');
  bs.replaceChildren(...boroughs.map((b) => new Option(b.name, b.name)));
  bs.value = boroughOf[zoneId];
  fillZones(bs, zs);
  choose(end, zoneId, false);
  bs.addEventListener('change', () => { fillZones(bs, zs); choose(end, parseInt(zs.value, 10), false); });
  zs.addEventListener('change', () => choose(end, parseInt(zs.value, 10), false));
}

async function drawMap() {  // the zones as SVG paths, built with DOM calls (no markup from the network)
  const r = await fetch('/zones/shapes');
  if (!r.ok) { $('map-box').hidden = true; return; }
  const shapes = await r.json(), names = {};
  boroughs.forEach((b) => b.zones.forEach((z) => { names[z.id] = `${z.name} (${b.name})`; }));
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('viewBox', shapes.viewBox);
  for (const [id, d] of Object.entries(shapes.zones)) {
    const path = document.createElementNS(SVG, 'path');
    path.setAttribute('d', d);
    path.id = `zone-${id}`;
    path.dataset.zone = id;
    const title = document.createElementNS(SVG, 'title');
    title.textContent = names[id] || `zone ${id}`;
    path.append(title);
    path.addEventListener('click', () => choose(choosing, parseInt(id, 10), true));
    svg.append(path);
  }
  $('map').replaceChildren(svg);
  choose('pu', parseInt($('pu-zone').value, 10), false);
  choose('do', parseInt($('do-zone').value, 10), false);
}

function nowLocal() {  // the current New York time as a datetime-local value
  const parts = Object.fromEntries(new Intl.DateTimeFormat('en-CA', {
    timeZone: 'America/New_York', hourCycle: 'h23', year: 'numeric', month: '2-digit', day: '2-digit',
    hour: '2-digit', minute: '2-digit'}).formatToParts(new Date()).map((p) => [p.type, p.value]));
  return `${parts.year}-${parts.month}-${parts.day}T${parts.hour}:${parts.minute}`;
}

function showError(message) {
  $('error').textContent = message;
  $('error').hidden = !message;
}

async function predict(event) {
  if (event) event.preventDefault();
  showError('');
  const ride = {PULocationID: parseInt($('pu-zone').value, 10), DOLocationID: parseInt($('do-zone').value, 10)};
  if ($('distance').value !== '') ride.trip_distance = Number($('distance').value);
  if ($('pickup').value) ride.pickup_datetime = $('pickup').value;
  $('predict').disabled = true;
  $('result').textContent = '…';
  try {
    const r = await fetch('/predict', {method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify(ride)});
    const body = await r.json();
    if (!r.ok) throw new Error(body.error || `HTTP ${r.status}`);
    const range = body.interval ? [Object.assign(document.createElement('small'), {
      textContent: `80 % of rides: ${Math.round(body.interval[0])}–${Math.round(body.interval[1])} min`})] : [];
    $('result').replaceChildren(`≈ ${Math.round(body.duration)} min`, ...range);
    $('result').dataset.minutes = String(body.duration);
    $('model').textContent = `version ${body.model_version}` + (body.used_distance ? ', with your distance' : '');
  } catch (e) {
    $('result').textContent = '';
    showError(e.message);
  } finally {
    $('predict').disabled = false;
  }
}

async function main() {
  $('pickup').value = nowLocal();
  $('ride').addEventListener('submit', predict);
  try {
    const [zones, health] = await Promise.all([fetch('/zones').then((r) => r.json()), fetch('/health').then((r) => r.json())]);
    boroughs = zones.boroughs;
    boroughs.forEach((b) => b.zones.forEach((z) => { boroughOf[z.id] = b.name; }));
    setupPicker('pu', 43);   // Central Park
    setupPicker('do', 151);  // Manhattan Valley
    $('model').textContent = `version ${health.model_version}`;
  } catch (e) {
    showError(`cannot load the zone list: ${e.message}`);
    return;
  }
  try { await drawMap(); } catch (e) { $('map-box').hidden = true; }
  document.body.dataset.ready = 'true';
}

document.addEventListener('DOMContentLoaded', main);
