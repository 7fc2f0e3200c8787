//! The dashboard: one static page whose inline script polls `/v1/fleet` every 2 s and
//! draws a table of instances × revisions per bundle, who is behind and for how long.
//! A token (when views need one) is taken from `#token=...` in the address or typed
//! into the page, and kept in the tab's sessionStorage only.

pub const PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>lockstep fleet</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px system-ui,sans-serif;margin:1.5rem;color:#222}
h1{font-size:1.3rem;margin:0 0 .5rem} h2{font-size:1.1rem;margin:1.5rem 0 .3rem}
table{border-collapse:collapse;margin:.3rem 0;min-width:40rem}
th,td{border:1px solid #ccc;padding:.25rem .6rem;text-align:left;font-variant-numeric:tabular-nums}
th{background:#f3f3f3} .ok{background:#e6f6e6} .behind{background:#fde8c8} .gone{background:#f8d0d0}
.muted{color:#777} code{font-size:12px} #err{color:#b00}
</style></head><body>
<h1>lockstep fleet</h1>
<div class="muted">updated <span id="at">never</span> · instances silent for more than <span id="ua">?</span> s are unreachable
 · token <input id="tok" type="password" size="18" placeholder="(if required)"></div>
<div id="err"></div><div id="out"></div>
<script>
const tokIn=document.getElementById('tok');
const h=new URLSearchParams(location.hash.slice(1));
if(h.get('token')){sessionStorage.setItem('lockstep-token',h.get('token'));history.replaceState(null,'',location.pathname);}
tokIn.value=sessionStorage.getItem('lockstep-token')||'';
tokIn.onchange=()=>{sessionStorage.setItem('lockstep-token',tokIn.value);poll();};
function esc(s){return String(s??'').replace(/[&<>"']/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;',"'":'&#39;'}[c]));}
function dur(s){if(s==null)return '';s=Math.round(s);if(s<120)return s+' s';if(s<7200)return Math.round(s/60)+' min';return Math.round(s/3600)+' h';}
function short(r){r=String(r??'');return r.length>12?r.slice(0,12)+'…':r;}
async function poll(){
  const t=sessionStorage.getItem('lockstep-token');
  try{
    const r=await fetch('v1/fleet',{headers:t?{Authorization:'Bearer '+t}:{}});
    if(!r.ok){document.getElementById('err').textContent='GET /v1/fleet: HTTP '+r.status+(r.status==401?' (enter a token)':'');return;}
    const f=await r.json(); document.getElementById('err').textContent='';
    document.getElementById('at').textContent=new Date(f.generated_at).toLocaleTimeString();
    document.getElementById('ua').textContent=f.unreachable_after_seconds;
    let html='';
    for(const b of f.bundles){
      html+='<h2>'+esc(b.name)+' — desired <code>'+esc(short(b.desired_revision))+'</code> · '+b.instances_current+'/'+b.instances_total+' current'+
        (b.instances_unreachable?' · '+b.instances_unreachable+' unreachable':'')+
        (b.instances_refusing_rollback?' · '+b.instances_refusing_rollback+' refusing the rollback (re-sign it)':'')+(b.converged?' · converged':'')+'</h2>';
      const revs=[...new Set(b.instances.map(i=>i.active_revision??''))].sort((x,y)=>(y===b.desired_revision)-(x===b.desired_revision));
      html+='<table><tr><th>instance</th>'+revs.map(r=>'<th><code>'+esc(short(r)||'(none)')+'</code>'+(r===b.desired_revision?' (desired)':'')+'</th>').join('')+
        '<th>behind for</th><th>last report</th><th>errors</th></tr>';
      for(const i of b.instances){
        const cls=i.unreachable?'gone':(i.current?'ok':'behind');
        html+='<tr class="'+cls+'"><td>'+esc(i.id)+(i.unreachable?' (unreachable)':'')+(i.refusing_rollback?' (refuses rollback)':'')+'</td>'+
          revs.map(r=>'<td>'+((i.active_revision??'')===r?'●':'')+'</td>').join('')+
          '<td>'+(i.current?'':dur(i.lag_seconds))+'</td><td>'+dur(i.seconds_since_report)+' ago</td><td>'+
          esc(i.message||'')+(i.errors&&i.errors.length?' ('+i.errors.length+')':'')+'</td></tr>';
      }
      html+='</table>';
      if(b.publications.length){
        html+='<table><tr><th>when</th><th>action</th><th>revision</th><th>actor</th><th>reason</th><th>converged in</th></tr>';
        for(const p of b.publications.slice(0,5)){
          html+='<tr><td>'+esc(new Date(p.at).toLocaleString())+'</td><td>'+esc(p.action)+'</td><td><code>'+esc(short(p.revision))+'</code></td><td>'+
            esc(p.actor)+'</td><td>'+esc(p.reason||'')+'</td><td>'+(p.convergence_seconds!=null?p.convergence_seconds.toFixed(2)+' s':(p.superseded?'superseded':'pending'))+'</td></tr>';
        }
        html+='</table>';
      }
    }
    document.getElementById('out').innerHTML=html||'<p class="muted">no bundles published and no instance reporting yet</p>';
  }catch(e){document.getElementById('err').textContent=String(e);}
}
poll(); setInterval(poll,2000);
</script></body></html>
"#;
