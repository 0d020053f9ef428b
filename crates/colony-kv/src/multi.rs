//! Commands over several keys. On one node each key is still applied by its
//! own vnode, so these are not atomic across keys (MSETNX, RENAME and SMOVE
//! check, then act): a concurrent writer can slip between the check and
//! the act. ARCHITECTURE.md records this difference from Redis.

use crate::op::{SetCond, SetExpire};
use crate::{KeyOp, KvError, KvService, Object, Reply, Value};
use bytes::Bytes;
use futures::future::join_all;
use std::collections::BTreeSet;

/// SINTER / SUNION / SDIFF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetAlgebra {
    Inter,
    Union,
    Diff,
}

impl KvService {
    /// Apply one op per key, concurrently across partitions, in key order.
    pub async fn call_each(&self, bucket: &Bytes, calls: Vec<(Bytes, KeyOp)>) -> Vec<Reply> {
        join_all(calls.into_iter().map(|(k, op)| self.call(bucket, k, op))).await
    }

    /// Sum of integer replies (DEL, EXISTS, UNLINK over many keys).
    pub async fn count_each(&self, bucket: &Bytes, keys: Vec<Bytes>, op: KeyOp) -> Reply {
        let calls = keys.into_iter().map(|k| (k, op.clone())).collect();
        let mut n = 0;
        for r in self.call_each(bucket, calls).await {
            match r {
                Reply::Int(i) => n += i,
                Reply::Error(e) => return Reply::Error(e),
                _ => {}
            }
        }
        Reply::Int(n)
    }

    pub async fn mset(&self, bucket: &Bytes, pairs: Vec<(Bytes, Bytes)>) -> Reply {
        let calls = pairs.into_iter().map(|(k, v)| (k, plain_set(v))).collect();
        for r in self.call_each(bucket, calls).await {
            if let Reply::Error(e) = r {
                return Reply::Error(e);
            }
        }
        Reply::Ok
    }

    pub async fn msetnx(&self, bucket: &Bytes, pairs: Vec<(Bytes, Bytes)>) -> Reply {
        let keys = pairs.iter().map(|(k, _)| k.clone()).collect();
        match self.count_each(bucket, keys, KeyOp::Exists).await {
            Reply::Int(0) => {}
            Reply::Int(_) => return Reply::Int(0),
            other => return other,
        }
        match self.mset(bucket, pairs).await {
            Reply::Ok => Reply::Int(1),
            other => other,
        }
    }

    /// RENAME (`nx` false) and RENAMENX (`nx` true).
    pub async fn rename(
        &self,
        bucket: &Bytes,
        from: Bytes,
        to: Bytes,
        nx: bool,
    ) -> Result<Reply, KvError> {
        if from == to {
            return match self.call_ok(bucket, from, KeyOp::Exists).await? {
                Reply::Int(1) if nx => Ok(Reply::Int(0)),
                Reply::Int(1) => Ok(Reply::Ok),
                _ => Err(KvError::NoSuchKey),
            };
        }
        if nx {
            if self.call_ok(bucket, from.clone(), KeyOp::Exists).await? == Reply::Int(0) {
                return Err(KvError::NoSuchKey);
            }
            if self.call_ok(bucket, to.clone(), KeyOp::Exists).await? == Reply::Int(1) {
                return Ok(Reply::Int(0));
            }
        }
        let object = self
            .object(bucket, from.clone(), KeyOp::Take)
            .await?
            .ok_or(KvError::NoSuchKey)?;
        let object = Box::new(object);
        let put = KeyOp::Put {
            object: object.clone(),
            nx,
        };
        match self.call_ok(bucket, to, put).await {
            Ok(Reply::Int(1)) => Ok(if nx { Reply::Int(1) } else { Reply::Ok }),
            outcome => {
                // The target appeared meanwhile (or the write failed): put
                // the source back rather than lose it.
                let back = KeyOp::Put { object, nx: true };
                self.call_ok(bucket, from, back).await?;
                outcome.map(|_| Reply::Int(0))
            }
        }
    }

    pub async fn smove(
        &self,
        bucket: &Bytes,
        src: Bytes,
        dst: Bytes,
        member: Bytes,
    ) -> Result<Reply, KvError> {
        // Both keys must be sets (or missing) before anything moves.
        self.set_members(bucket, dst.clone()).await?;
        if src == dst {
            let m = self.set_members(bucket, src).await?;
            return Ok(Reply::bool(m.is_some_and(|s| s.contains(&member))));
        }
        let removed = self
            .call_ok(bucket, src, KeyOp::SRem(vec![member.clone()]))
            .await?;
        if removed != Reply::Int(1) {
            return Ok(Reply::Int(0));
        }
        self.call_ok(bucket, dst, KeyOp::SAdd(vec![member])).await?;
        Ok(Reply::Int(1))
    }

    /// The members of the set at `key`; None if missing; WRONGTYPE if not a set.
    pub async fn set_members(
        &self,
        bucket: &Bytes,
        key: Bytes,
    ) -> Result<Option<BTreeSet<Bytes>>, KvError> {
        match self.object(bucket, key, KeyOp::Fetch).await? {
            None => Ok(None),
            Some(Object {
                value: Value::Set(s),
                ..
            }) => Ok(Some(s)),
            Some(_) => Err(KvError::WrongType),
        }
    }

    /// SINTER / SUNION / SDIFF of `keys`.
    pub async fn set_algebra(
        &self,
        bucket: &Bytes,
        op: SetAlgebra,
        keys: Vec<Bytes>,
    ) -> Result<BTreeSet<Bytes>, KvError> {
        let sets = join_all(keys.into_iter().map(|k| self.set_members(bucket, k))).await;
        let mut sets = sets.into_iter().collect::<Result<Vec<_>, _>>()?.into_iter();
        let first = sets.next().flatten().unwrap_or_default();
        Ok(sets.fold(first, |acc, s| {
            let s = s.unwrap_or_default();
            match op {
                SetAlgebra::Inter => acc.intersection(&s).cloned().collect(),
                SetAlgebra::Union => acc.union(&s).cloned().collect(),
                SetAlgebra::Diff => acc.difference(&s).cloned().collect(),
            }
        }))
    }

    /// The *STORE forms: replace `dst` with the result; reply its size.
    pub async fn set_algebra_store(
        &self,
        bucket: &Bytes,
        op: SetAlgebra,
        dst: Bytes,
        keys: Vec<Bytes>,
    ) -> Result<Reply, KvError> {
        let result = self.set_algebra(bucket, op, keys).await?;
        let n = result.len() as i64;
        let object = (!result.is_empty()).then(|| Box::new(Object::new(Value::Set(result))));
        self.call_ok(bucket, dst, KeyOp::Replace(object)).await?;
        Ok(Reply::Int(n))
    }
}

fn plain_set(value: Bytes) -> KeyOp {
    KeyOp::Set {
        value,
        expire: SetExpire::Clear,
        cond: SetCond::Always,
        get: false,
    }
}
