// The console's only script (the Content-Security-Policy allows no
// inline one): it patches pages from their event streams. Every value
// goes in as text, never as HTML.
(function () {
  'use strict';

  function when(s) {
    if (!s) return '';
    var d = new Date(s);
    if (isNaN(d.getTime())) return String(s);
    return d.toISOString().slice(0, 16).replace('T', ' ') + ' UTC';
  }

  function get(obj, path) {
    return path.split('.').reduce(function (o, k) {
      return o === undefined || o === null ? undefined : o[k];
    }, obj);
  }

  function show(v, kind) {
    if (v === undefined || v === null) return '';
    if (kind === 'time') return when(v);
    if (kind === 'yesno') return v ? 'yes' : 'no';
    return String(v);
  }

  function cell(tr, text, cls) {
    var td = document.createElement('td');
    td.textContent = text;
    if (cls) td.className = cls;
    tr.appendChild(td);
    return td;
  }

  function patchStatus(root, st) {
    root.querySelectorAll('[data-field]').forEach(function (el) {
      el.textContent = show(get(st, el.dataset.field), el.dataset.kind);
    });
    var badge = document.getElementById('healthy');
    if (badge) {
      badge.textContent = st.healthy ? 'healthy' : 'unhealthy';
      badge.className = 'badge ' + (st.healthy ? 'ok' : 'bad');
    }
    var body = document.getElementById('services');
    if (body) {
      var rows = document.createDocumentFragment();
      (st.services || []).forEach(function (s) {
        var tr = document.createElement('tr');
        if (s.crash_loop) tr.className = 'bad';
        cell(tr, s.name);
        cell(tr, s.state + (s.held ? ' (held)' : ''));
        cell(tr, s.health, 'health-' + s.health);
        cell(tr, String(s.restarts));
        var code = document.createElement('code');
        code.textContent = s.image;
        cell(tr, '').appendChild(code);
        cell(tr, s.crash_loop ? 'yes' : 'no');
        var a = document.createElement('a');
        a.href = '/logs?service=' + encodeURIComponent(s.name);
        a.textContent = 'logs';
        cell(tr, '').appendChild(a);
        rows.appendChild(tr);
      });
      body.replaceChildren(rows);
    }
    var notes = document.getElementById('notes');
    if (notes) {
      var items = document.createDocumentFragment();
      (st.notes || []).forEach(function (n) {
        var li = document.createElement('li');
        li.textContent = n;
        items.appendChild(li);
      });
      notes.replaceChildren(items);
    }
  }

  function streamStatus(root) {
    var live = document.getElementById('live');
    var es = new EventSource(root.dataset.stream);
    es.onmessage = function (e) {
      patchStatus(root, JSON.parse(e.data));
      if (live) live.textContent = 'Live: updated ' + new Date().toLocaleTimeString() + '.';
    };
    es.addEventListener('failure', function (e) {
      if (live) live.textContent = JSON.parse(e.data).error;
    });
    es.addEventListener('expired', function () {
      es.close();
      window.location.assign('/login');
    });
    es.onerror = function () {
      if (live) live.textContent = 'Not live: the console does not answer; retrying.';
    };
  }

  function streamUpgrade(root) {
    var list = document.getElementById('upgrade-steps');
    var state = document.getElementById('upgrade-state');
    var es = new EventSource(root.dataset.stream);
    es.addEventListener('step', function (e) {
      var ev = JSON.parse(e.data);
      var li = null;
      list.querySelectorAll('li').forEach(function (x) {
        if (x.dataset.step === ev.step) li = x;
      });
      if (!li) {
        li = document.createElement('li');
        li.dataset.step = ev.step;
        list.appendChild(li);
      }
      li.textContent = ev.step + ': ' + ev.state;
      li.className = 'state-' + ev.state;
    });
    es.addEventListener('done', function (e) {
      var run = JSON.parse(e.data);
      state.textContent = run.error ? 'Failed: ' + run.error : 'Finished ' + when(run.ended) + '.';
      // The facts above came with the page, before the upgrade.
      var installed = document.getElementById('installed');
      if (installed && !run.error) installed.textContent = run.to;
      es.close();
      var button = document.querySelector('form[action="/upgrade"] button');
      if (button) button.disabled = false;
    });
    ['idle', 'expired'].forEach(function (name) {
      es.addEventListener(name, function () { es.close(); });
    });
  }

  function followLogs(button) {
    var log = document.getElementById('log');
    var es = null;
    button.addEventListener('click', function () {
      if (es) {
        es.close();
        es = null;
        button.textContent = 'Follow';
        return;
      }
      log.textContent = '';
      es = new EventSource(button.dataset.url);
      button.textContent = 'Stop';
      es.onmessage = function (e) {
        var atEnd = window.innerHeight + window.scrollY >= document.body.offsetHeight - 4;
        log.appendChild(document.createTextNode(e.data + '\n'));
        if (atEnd) window.scrollTo(0, document.body.scrollHeight);
      };
      es.addEventListener('failure', function (e) {
        log.appendChild(document.createTextNode(JSON.parse(e.data).error + '\n'));
      });
      es.addEventListener('end', function () {
        es.close();
        es = null;
        button.textContent = 'Follow';
      });
    });
  }

  var status = document.getElementById('status');
  if (status) streamStatus(status);
  var run = document.getElementById('upgrade-run');
  if (run) streamUpgrade(run);
  var follow = document.getElementById('follow');
  if (follow) followLogs(follow);
})();
