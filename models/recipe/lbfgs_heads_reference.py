"""Reference for the exit-head optimizer (src/optimize/heads.rs): multinomial logistic regression on the demo
ResNet's pooled features at the zoo's ee2 / ee4 / ee5 tensors, fitted by full-batch L-BFGS (memory 10,
backtracking, L2 1e-4) to convergence on the committed 10 000-image training subset; prints iterations, time and
test top-1. Needs numpy, onnx and onnxruntime only.

    python models/recipe/lbfgs_heads_reference.py
"""
import gzip, time

import numpy as np
import onnx
import onnxruntime as ort

from common import REPO
def load(d):
    img=gzip.decompress(open(REPO / f'assets/fashion-mnist/{d}/images-idx3-ubyte.gz','rb').read())
    lab=gzip.decompress(open(REPO / f'assets/fashion-mnist/{d}/labels-idx1-ubyte.gz','rb').read())
    x=np.frombuffer(img[16:],np.uint8).reshape(-1,1,28,28).astype(np.float32)*np.float32(1/255)
    return (x-np.float32(0.286))/np.float32(0.353), np.frombuffer(lab[8:],np.uint8).astype(int)
T=['/blocks.1/Relu_1_output_0','/blocks.3/Relu_1_output_0','/blocks.4/Relu_1_output_0']
m=onnx.load(str(REPO / 'models/resnet/base.onnx'))
del m.graph.output[:]
for t in T: m.graph.output.append(onnx.helper.make_tensor_value_info(t,1,None))
so=ort.SessionOptions(); so.intra_op_num_threads=1
s=ort.InferenceSession(m.SerializeToString(),so)
def feats(x):
    out=[[] for _ in T]
    for i in range(0,len(x),200):
        r=s.run(T,{'image':x[i:i+200]})
        for k,v in enumerate(r): out[k].append(v.mean(axis=(2,3)))
    return [np.concatenate(o).astype(np.float64) for o in out]
xtr,ytr=load('train'); xte,yte=load('test')
ftr,fte=feats(xtr),feats(xte)
def lbfgs(f, w, m=10, iters=500):
    s_,y_=[],[]; val,g=f(w)
    for it in range(iters):
        q=g.copy(); al=[]
        for si,yi in reversed(list(zip(s_,y_))):
            a=si@q/(yi@si); al.append(a); q-=a*yi
        if s_: q*= (s_[-1]@y_[-1])/(y_[-1]@y_[-1])
        for (si,yi),a in zip(zip(s_,y_),reversed(al)):
            b=yi@q/(yi@si); q+=si*(a-b)
        d=-q; t=1.0
        while True:
            nv,ng=f(w+t*d)
            if nv<=val+1e-4*t*(g@d) or t<1e-10: break
            t*=0.5
        s_.append(t*d); y_.append(ng-g); s_=s_[-m:]; y_=y_[-m:]
        w=w+t*d
        if abs(val-nv)<1e-10: val,g=nv,ng; break
        val,g=nv,ng
    return w,it
for k in range(3):
    X=ftr[k]; mu=X.mean(0); sd=X.std(0)+1e-12; Z=(X-mu)/sd; Zt=(fte[k]-mu)/sd
    n,F=Z.shape; C=10; Y=np.eye(C)[ytr]
    for lam in [1e-4]:
        def f(w):
            W=w[:F*C].reshape(C,F); b=w[F*C:]
            L=Z@W.T+b; L-=L.max(1,keepdims=True); P=np.exp(L); P/=P.sum(1,keepdims=True)
            loss=-np.log(P[np.arange(n),ytr]).mean()+0.5*lam*(W*W).sum()
            G=(P-Y)/n; gW=G.T@Z+lam*W; gb=G.sum(0)
            return loss, np.concatenate([gW.ravel(),gb])
        t0=time.time(); w,it=lbfgs(f,np.zeros(F*C+C)); dt=time.time()-t0
        W=w[:F*C].reshape(C,F); b=w[F*C:]
        print(T[k], 'L-BFGS full batch on all 10000 train: iters',it,'time %.2fs'%dt,'test acc %.4f'%((Zt@W.T+b).argmax(1)==yte).mean())
