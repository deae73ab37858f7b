//! The operator's verbs as pure edits of a [`Config`]: register and
//! deregister targets, set a weight, modify a listener or a target group,
//! delete one. Each refuses what names nothing (404) or would remove what
//! is in use (409) and changes nothing else; the control loop then
//! validates the result and applies it like any new config, so a verb
//! needs no kernel, no loop and no lifecycle to be tested.
use std::{collections::HashMap, net::SocketAddr};

use super::{
    command::{ListenerAttributes, TargetGroupAttributes, TargetSpec},
    error::ControlError,
};
use crate::config::{
    Config, DEFAULT_WEIGHT, Listener, TargetDescription, TargetGroup, ValidationError,
};

/// Adds `specs` to `group`; registering a registered target updates it, as
/// in ELB. The same target twice in `specs` is refused, as the config
/// check refuses it twice in a group (which of the two would win?).
pub fn register(c: &mut Config, group: &str, specs: Vec<TargetSpec>) -> Result<(), ControlError> {
    let g = group_mut(c, group)?;
    if specs.is_empty() {
        return Err(ControlError::BadRequest("no targets given".into()));
    }
    let port = g.port;
    let mut seen = HashMap::new();
    let mut twice = Vec::new();
    for (i, s) in specs.iter().enumerate() {
        let ep = SocketAddr::new(s.address, s.port.unwrap_or(port));
        if let Some(first) = seen.insert(ep, i) {
            twice.push(ValidationError {
                path: format!("targets[{i}]"),
                reason: format!("{ep} duplicates targets[{first}]"),
            });
            seen.insert(ep, first);
        }
    }
    if !twice.is_empty() {
        return Err(ControlError::Invalid(twice.into_iter().collect()));
    }
    for s in specs {
        let target = TargetDescription {
            address: s.address,
            port: s.port,
            weight: s.weight.unwrap_or(DEFAULT_WEIGHT),
            zone: s.zone,
        };
        let ep = g.endpoint(&target);
        let port = g.port;
        match g.targets.iter_mut().find(|t| endpoint(port, t) == ep) {
            Some(t) => *t = target,
            None => g.targets.push(target),
        }
    }
    Ok(())
}

/// Removes `targets` from `group`; every one must be registered.
pub fn deregister(c: &mut Config, group: &str, targets: &[SocketAddr]) -> Result<(), ControlError> {
    let g = group_mut(c, group)?;
    let port = g.port;
    if let Some(ep) = targets
        .iter()
        .find(|ep| !g.targets.iter().any(|t| endpoint(port, t) == **ep))
    {
        return Err(not_registered(*ep, group));
    }
    g.targets.retain(|t| !targets.contains(&endpoint(port, t)));
    Ok(())
}

pub fn set_weight(
    c: &mut Config,
    group: &str,
    target: SocketAddr,
    weight: u32,
) -> Result<(), ControlError> {
    let g = group_mut(c, group)?;
    let port = g.port;
    let t = g
        .targets
        .iter_mut()
        .find(|t| endpoint(port, t) == target)
        .ok_or_else(|| not_registered(target, group))?;
    t.weight = weight;
    Ok(())
}

pub fn modify_listener(
    c: &mut Config,
    name: &str,
    a: &ListenerAttributes,
) -> Result<(), ControlError> {
    let l = listener_mut(c, name)?;
    if let Some(v) = a.deletion_protection {
        l.deletion_protection = v;
    }
    Ok(())
}

pub fn modify_target_group(
    c: &mut Config,
    name: &str,
    a: &TargetGroupAttributes,
) -> Result<(), ControlError> {
    let g = group_mut(c, name)?;
    if let Some(v) = a.deletion_protection {
        g.deletion_protection = v;
    }
    if let Some(v) = a.deregistration_delay {
        g.deregistration_delay = v;
    }
    if let Some(v) = a.slow_start {
        g.slow_start = v;
    }
    if let Some(v) = a.cross_zone {
        g.cross_zone = v;
    }
    if let Some(v) = a.unhealthy_connection_termination {
        g.unhealthy_connection_termination = v;
    }
    Ok(())
}

/// Removes the listener (deletion protection is checked on the result, by
/// the loop, like any removal).
pub fn delete_listener(c: &mut Config, name: &str) -> Result<(), ControlError> {
    listener_mut(c, name)?;
    c.listeners.retain(|l| l.name != name);
    Ok(())
}

/// Removes the target group, unless a listener still forwards to it.
pub fn delete_target_group(c: &mut Config, name: &str) -> Result<(), ControlError> {
    group_mut(c, name)?;
    if let Some(l) = c
        .listeners
        .iter()
        .find(|l| l.referenced_groups().contains(&name))
    {
        return Err(ControlError::Conflict(format!(
            "target group {name:?} is in use by listener {:?}",
            l.name
        )));
    }
    c.target_groups.retain(|g| g.name != name);
    Ok(())
}

/// The target group `name` of the running config.
pub fn group<'a>(c: &'a Config, name: &str) -> Result<&'a TargetGroup, ControlError> {
    c.target_group(name).ok_or_else(|| no_group(name))
}

fn endpoint(group_port: u16, t: &TargetDescription) -> SocketAddr {
    SocketAddr::new(t.address, t.port.unwrap_or(group_port))
}

fn group_mut<'a>(c: &'a mut Config, name: &str) -> Result<&'a mut TargetGroup, ControlError> {
    c.target_groups
        .iter_mut()
        .find(|g| g.name == name)
        .ok_or_else(|| no_group(name))
}

fn listener_mut<'a>(c: &'a mut Config, name: &str) -> Result<&'a mut Listener, ControlError> {
    c.listeners
        .iter_mut()
        .find(|l| l.name == name)
        .ok_or_else(|| ControlError::NotFound(format!("listener {name:?} does not exist")))
}

fn no_group(name: &str) -> ControlError {
    ControlError::NotFound(format!("target group {name:?} does not exist"))
}

fn not_registered(target: SocketAddr, group: &str) -> ControlError {
    ControlError::NotFound(format!(
        "{target} is not registered in target group {group:?}"
    ))
}

#[cfg(test)]
mod tests;
