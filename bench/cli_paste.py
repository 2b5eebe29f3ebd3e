#!/usr/bin/env python3
"""Pipes N lines into a real `peer` in a direct chat and reports how long until the
other peer has shown them all, both peers' peak memory, and what each store holds.

Usage: cargo build --release -p p2pchat-peer -p p2pchat-coordinator && python3 bench/cli_paste.py 100000
Loopback only; the processes and their temporary folder are left to the OS when it ends."""
import subprocess, threading, time, os, sqlite3, tempfile, re, sys
B=os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'target', 'release')
d=tempfile.mkdtemp()
coord=subprocess.Popen([B+'/coordinator','--data-dir',d+'/c','--listen','127.0.0.1:0'],stdout=subprocess.PIPE,stderr=subprocess.DEVNULL,text=True)
addr=None
for line in coord.stdout:
    m=re.search(r'listening on (\S+)',line)
    if m: addr=m.group(1); break
def peer(name):
    p=subprocess.Popen([B+'/peer','--coordinator',addr,'--ca-cert',d+'/c/tls/ca.pem','--listen','127.0.0.1:0','--data-dir',d+'/'+name],stdin=subprocess.PIPE,stdout=subprocess.PIPE,stderr=subprocess.DEVNULL,text=True,bufsize=1)
    lines=[]
    cv=threading.Condition()
    def rd():
        for l in p.stdout:
            with cv: lines.append(l.rstrip('\n')); cv.notify_all()
    threading.Thread(target=rd,daemon=True).start()
    return p,lines,cv
def expect(pl,needle,timeout=300,start=0):
    p,lines,cv=pl
    end=time.time()+timeout
    with cv:
        while True:
            for i in range(start,len(lines)):
                if needle in lines[i]: return i
            if time.time()>end: raise SystemExit(f'timeout waiting for {needle}: {lines[-5:]}')
            cv.wait(1)
def send(pl,s): pl[0].stdin.write(s+'\n'); pl[0].stdin.flush()
def hwm(p):
    for l in open(f'/proc/{p.pid}/status'):
        if l.startswith('VmHWM'): return l.split()[1]
a=peer('a'); b=peer('b')
for pl,n in ((a,'alice'),(b,'bob')):
    expect(pl,'Username:'); send(pl,n); expect(pl,'Choose a password'); send(pl,'password123'); expect(pl,'Repeat'); send(pl,'password123'); expect(pl,'Logged in')
send(a,'bob'); expect(b,'Chat with alice? [y/n]'); send(b,'y'); expect(a,'You are now chatting with bob')
N=int(sys.argv[1])
t=time.time()
def feed():
    a[0].stdin.write(''.join(f'p{i:06d}\n' for i in range(N))); a[0].stdin.flush()
threading.Thread(target=feed,daemon=True).start()
expect(b,f'alice: p{N-1:06d}',timeout=600)
el=time.time()-t
print(f'{N} lines pasted through the pipe, all shown by bob in {el:.1f} s ({N/el:.0f} lines/s)')
print('peak RSS alice', hwm(a[0]),'KiB; bob', hwm(b[0]),'KiB')
shown=[l.split('] alice: ')[1] for l in b[1] if '] alice: ' in l]
print('bob shown', len(shown), 'in order:', shown==[f'p{i:06d}' for i in range(N)])
time.sleep(2)
for who,acct in (('a','alice'),('b','bob')):
    c=sqlite3.connect(f'{d}/{who}/accounts/{acct}.sqlite3')
    print(acct, c.execute('select count(*), count(distinct id), sum(delivered_at_ms is not null) from messages').fetchone())
for pl in (a,b): pl[0].kill()
coord.kill()
