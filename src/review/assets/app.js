'use strict';
// The vlm review page. Plain DOM, no framework; every piece of data enters the page
// through textContent, element properties or URL attributes, never as markup.
(function () {
  const data = JSON.parse(document.getElementById('vlm-data').textContent);
  const recs = data.records;
  const labels = data.labels;
  const isEval = data.kind === 'eval';
  // vlm dedup: each "label" is a group, each score the similarity to the group's first image.
  const isDup = data.kind === 'duplicates';
  // The group's first image is marked as such: a copy may be as similar to it as it is to itself.
  const isFirst = (r) => r.scores[0][3] === true;
  // A page of `vlm caption` or `vlm ask` results alone has no labels to group or doubt.
  const hasLabels = labels.length > 0;
  // Labels and captions joined: every card keeps room for a caption line, so thumbnails
  // in a row are the same height whether or not their image was captioned.
  const hasJoined = hasLabels && recs.some((r) => r.caption !== undefined);
  const CARD_W = 180, CARD_H = 232, HEAD_H = 40, OVERSCAN = 600;
  const $ = (id) => document.getElementById(id);
  const grid = $('grid');
  const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: 'base' });
  const timings = { renders: [] };
  const t0 = performance.now();

  const state = {
    filter: { type: 'all' }, search: '', sort: 'confidence', group: true, threshold: 0.5,
    view: [], sections: [], rows: [], cols: 1, cardW: CARD_W, sel: 0, detail: false,
  };
  const corrections = new Map(); // record index -> label

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  const pct = (p) => (p * 100).toFixed(p >= 0.9995 || p < 0.0005 ? 0 : 1) + '%';
  const baseName = (p) => { const parts = p.split(/[\\/]/); return parts[parts.length - 1] || p; };
  // A record from `vlm caption` or `vlm ask` has a caption and no scores.
  const failed = (r) => r.error !== undefined || (r.scores === undefined && r.caption === undefined);
  const scored = (r) => !failed(r) && r.scores !== undefined;
  const topId = (r) => (scored(r) ? r.scores[0][0] : failed(r) ? -1 : -2);
  // How sure the model was: of its top label, or (a record with a caption and no labels) of
  // its caption, as the geometric mean of its tokens' probabilities; -1 when unknown.
  const captionSure = (r) => (r.token_log_prob !== undefined ? Math.exp(r.token_log_prob) : -1);
  const conf = (r) => (scored(r) ? r.scores[0][1] : failed(r) ? -1 : captionSure(r));
  function uncertain(r) {
    if (!scored(r) || isDup) return false;
    if (typeof r.uncertain === 'boolean') return r.uncertain;
    if (Array.isArray(r.selected)) return r.selected.length === 0;
    return conf(r) < state.threshold;
  }
  function matches(i) {
    const r = recs[i], f = state.filter;
    const q = state.search;
    if (q && !r.path.toLowerCase().includes(q) && !(r.caption !== undefined && r.caption.toLowerCase().includes(q))) return false;
    switch (f.type) {
      case 'label': return scored(r) && labels[topId(r)] === f.label;
      case 'uncertain': return uncertain(r);
      case 'failed': return failed(r);
      case 'corrected': return corrections.has(i);
      case 'cell': return !failed(r) && r.truth === f.truth && topId(r) === f.pred;
      default: return true;
    }
  }
  function comparator() {
    const byName = (a, b) => collator.compare(recs[a].path, recs[b].path) || a - b;
    switch (state.sort) {
      case 'name': return byName;
      case 'input': return (a, b) => a - b;
      case 'confidence-desc': return (a, b) => conf(recs[b]) - conf(recs[a]) || a - b;
      // Least sure first; failed images (no confidence at all) go last.
      default: return (a, b) => {
        const fa = failed(recs[a]), fb = failed(recs[b]);
        if (fa !== fb) return fa ? 1 : -1;
        return conf(recs[a]) - conf(recs[b]) || a - b;
      };
    }
  }

  // ---- the view: filtered, sorted, grouped record indices, and their layout ----
  function compute() {
    const t = performance.now();
    const picked = [];
    for (let i = 0; i < recs.length; i++) if (matches(i)) picked.push(i);
    picked.sort(comparator());
    let sections;
    if (state.group) {
      const buckets = new Map();
      for (const i of picked) {
        const k = topId(recs[i]);
        if (!buckets.has(k)) buckets.set(k, []);
        buckets.get(k).push(i);
      }
      const keys = [...buckets.keys()].sort((a, b) => (a < 0) - (b < 0) || a - b);
      sections = keys.map((k) => ({ name: k === -1 ? 'failed' : k === -2 ? 'captioned' : labels[k], items: buckets.get(k) }));
    } else {
      sections = [{ name: null, items: picked }];
    }
    state.view = [];
    for (const s of sections) { s.start = state.view.length; for (const i of s.items) state.view.push(i); }
    state.sections = sections;
    state.sel = Math.min(state.sel, Math.max(0, state.view.length - 1));
    layout();
    timings.lastCompute = performance.now() - t;
  }
  function layout() {
    const width = grid.clientWidth || window.innerWidth - 24;
    const cols = Math.max(1, Math.floor(width / CARD_W));
    const rows = [];
    let y = 0;
    state.sections.forEach((s, si) => {
      if (s.name !== null) { rows.push({ y, h: HEAD_H, head: si }); y += HEAD_H; }
      for (let k = 0; k < s.items.length; k += cols) {
        rows.push({ y, h: CARD_H, start: s.start + k, end: s.start + Math.min(k + cols, s.items.length) });
        y += CARD_H;
      }
    });
    state.cols = cols;
    // Spread the columns over the whole width rather than leaving a gap on the right.
    state.cardW = Math.floor(width / cols);
    state.rows = rows;
    grid.style.height = y + 'px';
    $('empty').hidden = state.view.length > 0;
    nodes.forEach((node) => node.remove());
    nodes.clear();
  }

  // ---- virtualised rendering: only the rows near the screen are in the DOM ----
  const nodes = new Map(); // key -> element
  let pending = false;
  function schedule() { if (!pending) { pending = true; requestAnimationFrame(() => { pending = false; render(); }); } }
  function firstRow(y) {
    let lo = 0, hi = state.rows.length - 1, ans = state.rows.length;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (state.rows[mid].y + state.rows[mid].h >= y) { ans = mid; hi = mid - 1; } else lo = mid + 1;
    }
    return ans;
  }
  function render() {
    const t = performance.now();
    const top = grid.getBoundingClientRect().top;
    const from = -top - OVERSCAN, to = -top + window.innerHeight + OVERSCAN;
    const wanted = new Set();
    for (let k = firstRow(from); k < state.rows.length && state.rows[k].y <= to; k++) {
      const row = state.rows[k];
      if (row.head !== undefined) {
        const key = 'h' + row.head;
        wanted.add(key);
        let node = nodes.get(key);
        if (!node) {
          const s = state.sections[row.head];
          node = el('div', 'group');
          node.append(el('bdi', '', s.name), el('span', 'count', s.items.length + (s.items.length === 1 ? ' image' : ' images')));
          node.style.top = row.y + 'px';
          node.style.height = row.h + 'px';
          grid.append(node);
          nodes.set(key, node);
        }
        continue;
      }
      for (let p = row.start; p < row.end; p++) {
        const i = state.view[p];
        const key = 'c' + i;
        wanted.add(key);
        let node = nodes.get(key);
        if (!node) { node = card(i); grid.append(node); nodes.set(key, node); }
        node.style.left = (p - row.start) * state.cardW + 'px';
        node.style.width = state.cardW - 10 + 'px';
        node.style.top = row.y + 'px';
        node.dataset.pos = p;
        paint(node, i, p);
      }
    }
    for (const [key, node] of nodes) if (!wanted.has(key)) { node.remove(); nodes.delete(key); }
    timings.renders.push(performance.now() - t);
    if (timings.renders.length > 200) timings.renders.shift();
  }
  function card(i) {
    const r = recs[i];
    const node = el('div', 'card');
    node.dataset.index = i;
    node.title = r.caption !== undefined ? r.path + '\n' + r.caption : r.path;
    const box = el('div', 'thumb');
    if (r.thumb) {
      const img = el('img');
      img.alt = '';
      img.decoding = 'async';
      img.src = r.thumb;
      box.append(img);
    } else {
      box.append(el('div', 'noimg', r.thumb_error || 'no thumbnail'));
    }
    const top = el('div', 'top');
    if (!failed(r) && !scored(r)) top.append(el('bdi', 'caption', r.caption));
    else {
      const score = failed(r) ? '' : isDup ? (isFirst(r) ? 'first' : 'sim ' + conf(r).toFixed(3)) : pct(conf(r));
      top.append(el('bdi', 'label', failed(r) ? 'failed' : labels[topId(r)]), el('span', 'prob', score));
    }
    node.append(box, top);
    // Labels and a caption (results files joined by path): the caption under the label.
    if (scored(r) && r.caption !== undefined) node.append(el('div', 'caption line', r.caption));
    node.append(el('div', 'name', baseName(r.path)), el('div', 'fix'));
    return node;
  }
  function paint(node, i, p) {
    const r = recs[i];
    node.classList.toggle('sel', p === state.sel);
    node.classList.toggle('failed', failed(r));
    node.classList.toggle('uncertain', uncertain(r));
    node.classList.toggle('corrected', corrections.has(i));
    let fix = '';
    if (corrections.has(i)) fix = '\u2192 ' + corrections.get(i);
    else if (isEval && r.truth !== undefined && r.truth !== topId(r)) fix = 'true: ' + labels[r.truth];
    const line = node.lastChild;
    if (line.textContent !== fix) line.textContent = fix;
  }
  function repaint() { for (const node of nodes.values()) if (node.classList.contains('card')) paint(node, +node.dataset.index, +node.dataset.pos); }

  // ---- filters, counts, header ----
  function chip(text, count, filter) {
    const b = el('button', 'chip');
    b.type = 'button';
    b.append(el('bdi', '', text), document.createTextNode(' ' + count));
    b.dataset.filter = JSON.stringify(filter);
    const f = state.filter;
    if (f.type === filter.type && f.label === filter.label && f.truth === filter.truth && f.pred === filter.pred) b.classList.add('on');
    return b;
  }
  function drawFilters() {
    const nav = $('filters');
    const counts = new Array(labels.length).fill(0);
    let nUnc = 0, nFail = 0;
    for (const r of recs) {
      if (failed(r)) { nFail++; continue; }
      if (!scored(r)) continue;
      counts[topId(r)]++;
      if (uncertain(r)) nUnc++;
    }
    const chips = [chip('all', recs.length, { type: 'all' })];
    // A duplicates page may have thousands of groups: they are the sections, not chips.
    if (!isDup) labels.forEach((name, k) => { if (counts[k] > 0) chips.push(chip(name, counts[k], { type: 'label', label: name })); });
    if (!isDup && hasLabels) chips.push(chip('uncertain', nUnc, { type: 'uncertain' }));
    if (!isDup) chips.push(chip('failed', nFail, { type: 'failed' }), chip('corrected', corrections.size, { type: 'corrected' }));
    if (state.filter.type === 'cell') {
      chips.push(chip('true ' + labels[state.filter.truth] + ' \u2192 predicted ' + labels[state.filter.pred], state.view.length, state.filter));
    }
    nav.replaceChildren(...chips);
    $('corrected-count').textContent = corrections.size ? corrections.size + ' corrected' : '';
  }
  function setFilter(filter) {
    state.filter = filter;
    state.sel = 0;
    compute();
    drawFilters();
    drawCells();
    render();
  }
  function refresh() { compute(); drawFilters(); render(); }

  // ---- selection, detail view, corrections ----
  function select(p, scroll) {
    if (!state.view.length) return;
    state.sel = Math.max(0, Math.min(state.view.length - 1, p));
    if (scroll) {
      const row = state.rows.find((r) => r.start !== undefined && state.sel >= r.start && state.sel < r.end);
      if (row) {
        const top = grid.getBoundingClientRect().top + window.scrollY + row.y;
        const bar = $('bar').offsetHeight;
        if (top < window.scrollY + bar) window.scrollTo(0, top - bar - 8);
        else if (top + row.h > window.scrollY + window.innerHeight) window.scrollTo(0, top + row.h - window.innerHeight + 8);
      }
    }
    render();
    repaint();
    if (state.detail) drawDetail();
  }
  function setLabel(i, label) {
    if (isDup) return;
    if (label === null || label === '') corrections.delete(i);
    else corrections.set(i, label);
    drawFilters();
    repaint();
    if (state.detail) drawDetail();
  }
  function openDetail(p) { state.detail = true; $('detail').hidden = false; select(p, true); }
  function closeDetail() { state.detail = false; $('detail').hidden = true; grid.focus(); }
  function drawDetail() {
    const i = state.view[state.sel];
    if (i === undefined) { closeDetail(); return; }
    const r = recs[i];
    const img = $('detail-img');
    img.dataset.index = i;
    img.src = r.src || r.thumb || '';
    $('detail-name').textContent = baseName(r.path);
    $('detail-path').textContent = r.path;
    $('detail-caption').textContent = r.caption !== undefined ? r.caption : '';
    $('position').textContent = (state.sel + 1) + ' of ' + state.view.length;
    const status = [];
    if (failed(r)) status.push('failed: ' + (r.error || 'no result'));
    if (uncertain(r)) status.push('uncertain');
    if (isDup && !failed(r)) status.push(isFirst(r) ? 'the first image of ' + labels[topId(r)] : 'cosine similarity ' + conf(r).toFixed(4) + ' to the first image of ' + labels[topId(r)]);
    if (isEval && r.truth !== undefined) status.push('true label: ' + labels[r.truth]);
    if (corrections.has(i)) status.push('corrected to: ' + corrections.get(i));
    if (r.token_log_prob !== undefined) status.push('caption sureness ' + pct(captionSure(r)) + ' a token (mean log-probability ' + r.token_log_prob.toFixed(3) + ')');
    if (r.note) status.push(r.note);
    if (!r.thumb && r.thumb_error) status.push('no thumbnail: ' + r.thumb_error);
    $('detail-status').textContent = status.join(' \u00b7 ');
    const bars = [];
    for (const [k, p, s, sel] of r.scores || []) {
      const b = el('div', 'bar' + (sel ? ' sel' : ''));
      b.title = s === null ? '' : 'similarity ' + s.toFixed(4) + (isDup ? ' to the group\'s first image' : '');
      const track = el('div', 'track');
      const fill = el('div', 'fill');
      fill.style.width = Math.max(0, Math.min(1, p)) * 100 + '%';
      track.append(fill);
      b.append(el('bdi', 'name', labels[k]), track, el('span', 'val', isDup ? p.toFixed(3) : pct(p)));
      bars.push(b);
    }
    $('bars').replaceChildren(...bars);
    const choices = labels.map((name, k) => {
      const b = el('button');
      b.type = 'button';
      if (k < 9) b.append(el('kbd', '', k + 1));
      b.append(el('bdi', '', name));
      b.dataset.label = name;
      if (corrections.get(i) === name) b.classList.add('on');
      return b;
    });
    for (const [, name] of corrections) {
      if (!labels.includes(name) && !choices.some((c) => c.dataset.label === name)) {
        const b = el('button');
        b.type = 'button';
        b.append(el('bdi', '', name));
        b.dataset.label = name;
        if (corrections.get(i) === name) b.classList.add('on');
        choices.push(b);
      }
    }
    const clear = el('button', '', 'clear (0)');
    clear.type = 'button';
    clear.dataset.label = '';
    choices.push(clear);
    $('choices').replaceChildren(...choices);
  }

  // ---- exports ----
  function absolute(r) {
    if (r.file) return r.file;
    if (/^(\/|[A-Za-z]:[\\/])/.test(r.path) || !data.root) return r.path;
    return data.root.replace(/\/+$/, '') + '/' + r.path;
  }
  function corrected() { return [...corrections.keys()].sort((a, b) => a - b); }
  function exportJsonl() {
    return corrected().map((i) => JSON.stringify({ path: absolute(recs[i]), label: corrections.get(i) }) + '\n').join('');
  }
  const shq = (s) => "'" + String(s).replace(/'/g, "'\\''") + "'";
  function folderName(label) {
    const safe = label.replace(/[\/\u0000]/g, '_');
    return safe === '.' || safe === '..' ? '_' + safe : safe;
  }
  function exportScript() {
    const out = [
      '#!/bin/sh',
      '# Written by vlm report: links each corrected image into DEST/<label>/, a labelled',
      '# folder for `vlm fit`, `vlm classify --examples` and `vlm eval`.',
      '# Usage: sh ' + 'vlm-corrections.sh DEST   (links that already exist are kept)',
      'set -eu',
      'DEST=${1:?usage: sh vlm-corrections.sh DEST}',
      'link() { mkdir -p -- "$DEST/$1" && { [ -e "$DEST/$1/$3" ] || [ -L "$DEST/$1/$3" ] || ln -s -- "$2" "$DEST/$1/$3"; }; }',
    ];
    const used = new Map();
    for (const i of corrected()) {
      const folder = folderName(corrections.get(i));
      const file = absolute(recs[i]);
      let name = baseName(file);
      const key = folder + '/' + name;
      const n = used.get(key) || 0;
      used.set(key, n + 1);
      if (n > 0) { const dot = name.lastIndexOf('.'); name = dot > 0 ? name.slice(0, dot) + '-' + n + name.slice(dot) : name + '-' + n; }
      out.push('link ' + shq(folder) + ' ' + shq(file) + ' ' + shq(name));
    }
    return out.join('\n') + '\n';
  }
  function download(name, text, type) {
    const url = URL.createObjectURL(new Blob([text], { type }));
    const a = el('a');
    a.href = url;
    a.download = name;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  // ---- the eval section: metrics, heat map, most-confused pairs, per-class bars ----
  let cells = [];
  function drawEval() {
    const m = data.meta;
    const sec = $('eval');
    sec.hidden = false;
    const left = el('div');
    left.append(el('h2', '', 'Metrics'));
    const table = el('table', 'metrics');
    const rows = [['prompts', m.spec], ['images', m.images + (m.failed ? ' (' + m.failed + ' failed)' : '')], ['top-1 accuracy', pct(m.top1)], ['top-' + m.k + ' accuracy', pct(m.top_k)], ['macro F1', m.macro_f1.toFixed(4)]];
    for (const [k, v] of rows) { const tr = el('tr'); tr.append(el('th', '', k), el('td', '', v)); table.append(tr); }
    left.append(table, el('h2', '', 'Per class'));
    const legend = el('div', 'legend');
    legend.append(el('span', 'p', '\u25a0 precision'), document.createTextNode('  '), el('span', 'r', '\u25a0 recall'));
    left.append(legend);
    labels.forEach((name, k) => {
      const c = m.per_class[k];
      if (!c) return;
      const row = el('div', 'classbar');
      row.title = name + ': precision ' + c.precision.toFixed(3) + ', recall ' + c.recall.toFixed(3) + ', F1 ' + c.f1.toFixed(3) + ', ' + c.support + ' images';
      const bar = (cls, v) => { const t = el('div', 'track'); const f = el('div', 'fill ' + cls); f.style.width = v * 100 + '%'; t.append(f); return t; };
      row.append(el('bdi', '', name), bar('p', c.precision), bar('r', c.recall));
      left.append(row);
    });
    const right = el('div');
    right.append(el('h2', '', 'Confusion (rows: true, columns: predicted; click a cell)'));
    const heat = el('div', 'heat');
    heat.style.gridTemplateColumns = 'auto repeat(' + labels.length + ', minmax(34px, 1fr))';
    heat.append(el('div'));
    for (const name of labels) heat.append(el('div', 'head col', name));
    cells = [];
    m.confusion.forEach((row, t) => {
      heat.append(el('div', 'head', labels[t]));
      const total = row.reduce((a, b) => a + b, 0) || 1;
      row.forEach((count, p) => {
        const share = count / total;
        const b = el('button', 'cell', count);
        b.type = 'button';
        b.dataset.truth = t;
        b.dataset.pred = p;
        b.title = 'true ' + labels[t] + ', predicted ' + labels[p] + ': ' + count + ' (' + pct(share) + ' of ' + labels[t] + ')';
        const light = 97 - share * 62;
        b.style.background = t === p ? 'hsl(145, 55%, ' + light + '%)' : 'hsl(10, 75%, ' + light + '%)';
        b.style.color = light < 60 ? '#fff' : '#18181b';
        heat.append(b);
        cells.push(b);
      });
    });
    right.append(heat, el('h2', '', 'Most confused'));
    const pairs = [];
    m.confusion.forEach((row, t) => row.forEach((count, p) => { if (t !== p && count > 0) pairs.push([count, t, p]); }));
    pairs.sort((a, b) => b[0] - a[0] || a[1] - b[1] || a[2] - b[2]);
    const list = el('div', 'pairs');
    for (const [count, t, p] of pairs.slice(0, 8)) {
      const row = el('div', 'pair');
      row.dataset.truth = t;
      row.dataset.pred = p;
      row.append(el('span', 'what', labels[t] + ' \u2192 ' + labels[p] + ': ' + count));
      let shown = 0;
      for (const r of recs) {
        if (shown >= 6) break;
        if (!failed(r) && r.truth === t && topId(r) === p && r.thumb) {
          const img = el('img');
          img.alt = '';
          img.src = r.thumb;
          img.title = r.path;
          row.append(img);
          shown++;
        }
      }
      list.append(row);
    }
    if (!pairs.length) list.append(el('p', 'muted', 'No confusions: every image was predicted right.'));
    right.append(list);
    sec.replaceChildren(left, right);
  }
  function drawCells() {
    const f = state.filter;
    for (const c of cells) c.classList.toggle('on', f.type === 'cell' && +c.dataset.truth === f.truth && +c.dataset.pred === f.pred);
  }
  function cellFilter(target) {
    const t = +target.dataset.truth, p = +target.dataset.pred;
    setFilter({ type: 'cell', truth: t, pred: p });
    grid.scrollIntoView({ block: 'start' });
  }

  // ---- events ----
  $('filters').addEventListener('click', (e) => {
    const b = e.target.closest('button');
    if (b) setFilter(JSON.parse(b.dataset.filter));
  });
  $('eval').addEventListener('click', (e) => {
    const b = e.target.closest('[data-truth]');
    if (b) cellFilter(b);
  });
  grid.addEventListener('click', (e) => {
    const c = e.target.closest('.card');
    if (c) openDetail(+c.dataset.pos);
  });
  $('search').addEventListener('input', (e) => { state.search = e.target.value.toLowerCase(); state.sel = 0; refresh(); });
  $('sort').addEventListener('change', (e) => { state.sort = e.target.value; refresh(); });
  $('group').addEventListener('change', (e) => { state.group = e.target.checked; refresh(); });
  $('threshold').addEventListener('input', (e) => { const v = parseFloat(e.target.value); if (v >= 0 && v <= 1) { state.threshold = v; refresh(); } });
  $('prev').addEventListener('click', () => select(state.sel - 1, true));
  $('next').addEventListener('click', () => select(state.sel + 1, true));
  $('close').addEventListener('click', closeDetail);
  $('detail').addEventListener('click', (e) => { if (e.target === $('detail')) closeDetail(); });
  $('choices').addEventListener('click', (e) => {
    const b = e.target.closest('button');
    if (b) setLabel(state.view[state.sel], b.dataset.label);
  });
  $('new-label').addEventListener('submit', (e) => {
    e.preventDefault();
    const text = $('new-label-text').value.trim();
    if (text) { setLabel(state.view[state.sel], text); $('new-label-text').value = ''; $('new-label-text').blur(); }
  });
  $('detail-img').addEventListener('error', (e) => {
    const r = recs[+e.target.dataset.index];
    if (r && r.thumb && e.target.getAttribute('src') !== r.thumb) e.target.src = r.thumb;
  });
  $('export-jsonl').addEventListener('click', () => download('vlm-corrections.jsonl', exportJsonl(), 'application/x-ndjson'));
  $('export-script').addEventListener('click', () => download('vlm-corrections.sh', exportScript(), 'text/x-shellscript'));
  document.addEventListener('keydown', (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const t = e.target;
    const typing = t instanceof HTMLSelectElement || (t instanceof HTMLInputElement && !['checkbox', 'radio', 'button', 'submit'].includes(t.type));
    if (typing) { if (e.key === 'Escape') e.target.blur(); return; }
    const i = state.view[state.sel];
    let handled = true;
    if (/^[1-9]$/.test(e.key)) { const name = labels[+e.key - 1]; if (name !== undefined && i !== undefined) setLabel(i, name); }
    else if (e.key === '0' || e.key === 'Backspace' || e.key === 'Delete') { if (i !== undefined) setLabel(i, null); }
    else if (e.key === 'n' && state.detail) $('new-label-text').focus();
    else if (e.key === '/') $('search').focus();
    else if (state.detail) {
      if (e.key === 'ArrowRight' || e.key === 'j' || e.key === 'ArrowDown') select(state.sel + 1, true);
      else if (e.key === 'ArrowLeft' || e.key === 'k' || e.key === 'ArrowUp') select(state.sel - 1, true);
      else if (e.key === 'Escape') closeDetail();
      else handled = false;
    } else {
      if (e.key === 'ArrowRight') select(state.sel + 1, true);
      else if (e.key === 'ArrowLeft') select(state.sel - 1, true);
      else if (e.key === 'ArrowDown') select(state.sel + state.cols, true);
      else if (e.key === 'ArrowUp') select(state.sel - state.cols, true);
      else if (e.key === 'Home') select(0, true);
      else if (e.key === 'End') select(state.view.length - 1, true);
      else if (e.key === 'Enter') openDetail(state.sel);
      else handled = false;
    }
    if (handled) e.preventDefault();
  });
  window.addEventListener('scroll', schedule, { passive: true });
  window.addEventListener('resize', () => { layout(); render(); });

  // ---- start ----
  $('title').textContent = data.title;
  document.title = data.title;
  const nFail = recs.filter(failed).length;
  $('summary').textContent = recs.length + ' images' + (labels.length ? ', ' + labels.length + ' labels' : '') + (nFail ? ', ' + nFail + ' failed' : '') + (data.meta && data.meta.results ? ' \u00b7 ' + data.meta.results : '');
  if (isDup) {
    const m = data.meta;
    $('summary').textContent = labels.length + ' groups of near-duplicates, ' + recs.length + ' of ' + m.images + ' images \u00b7 cosine \u2265 ' + m.threshold + ' \u00b7 ' + m.method;
    // Nothing to correct or export: a group is reviewed, not relabelled.
    for (const id of ['threshold-label', 'export-jsonl', 'export-script', 'corrected-count', 'fix-title', 'choices', 'new-label']) $(id).hidden = true;
    $('keys').textContent = 'keys: arrows move \u00b7 Enter opens \u00b7 Esc closes';
    $('group').parentElement.lastChild.textContent = ' one section per group';
    state.sort = 'input';
    $('sort').value = 'input';
  }
  grid.classList.toggle('joined', hasJoined);
  if (isEval) { drawEval(); state.group = false; $('group').checked = false; }
  if (!hasLabels) {
    // Captions or answers only: nothing to group by, no threshold, no label to set by key.
    $('group').parentElement.hidden = true;
    $('threshold-label').hidden = true;
    $('keys').textContent = 'keys: arrows move \u00b7 Enter opens \u00b7 Esc closes';
    state.group = false;
    $('group').checked = false;
  }
  compute();
  drawFilters();
  render();
  timings.startup = performance.now() - t0;

  // For the browser tests and for scripting the page from DevTools.
  window.vlmReport = {
    data, state, timings,
    view: () => state.view.slice(),
    rendered: () => [...grid.querySelectorAll('.card')].map((c) => +c.dataset.index),
    setFilter, refresh, select, openDetail, closeDetail,
    setSort(s) { state.sort = s; $('sort').value = s; refresh(); },
    setGroup(g) { state.group = g; $('group').checked = g; refresh(); },
    setSearch(q) { $('search').value = q; state.search = q.toLowerCase(); refresh(); },
    corrections: () => [...corrections].map(([i, label]) => ({ index: i, label })),
    exportJsonl, exportScript,
  };
})();
