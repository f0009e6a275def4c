//! Collections: creating, renaming, deleting, putting files in and sharing them with other
//! users. Every change of a collection runs on its current record in one store transaction,
//! and the files whose readers changed are handed to the search indexer here, so the HTTP
//! handlers only parse and map.
//!
//! Rules: viewers see a collection and its files; editors also add and remove files (adding
//! also needs ownership of the file); only the owner renames, deletes and shares; a member
//! may leave. No access at all is 404, like another user's file.

use crate::app::{AppState, blocking};
use crate::error::{Error, Result};
use crate::services::audit::{self, Actor};
use crate::store::library::{CollectionView, upsert_share};
use crate::store::records::{Access, CollectionRecord, FileRecord, UserRecord};

/// Longest collection name, in characters.
pub const MAX_NAME: usize = 200;
/// Longest description (and other free text), in characters.
pub const MAX_TEXT: usize = 10_000;

/// Checks a user-supplied name or text: not blank, at most `max` characters, no control
/// characters but newline and tab.
pub fn check_text(text: &str, what: &str, max: usize) -> Result<()> {
    if text.trim().is_empty() {
        return Err(Error::bad_request(format!("{what} must not be empty")));
    }
    if text.chars().count() > max {
        return Err(Error::bad_request(format!(
            "{what} must be at most {max} characters"
        )));
    }
    if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(Error::bad_request(format!(
            "{what} must not contain control characters"
        )));
    }
    Ok(())
}

fn check_description(description: &str) -> Result<()> {
    if description.chars().count() > MAX_TEXT {
        return Err(Error::bad_request("description is too long"));
    }
    Ok(())
}

/// A member of a collection as the API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Member {
    pub user_id: String,
    pub username: String,
    pub role: Access,
}

/// A collection with its files and members, as one user sees it.
#[derive(Debug)]
pub struct CollectionDetail {
    pub record: CollectionRecord,
    pub role: Access,
    /// The files and the viewer's access to each (an editor of the collection edits files
    /// others put there; only a file's owner has owner access to it).
    pub files: Vec<(FileRecord, Access)>,
    pub members: Vec<Member>,
}

pub async fn list(state: &AppState, user_id: &str) -> Result<Vec<CollectionView>> {
    let store = state.store.clone();
    let user_id = user_id.to_owned();
    blocking(move || store.list_collections(&user_id)).await
}

pub async fn create(
    state: &AppState,
    owner_id: &str,
    name: &str,
    description: &str,
) -> Result<CollectionView> {
    check_text(name, "name", MAX_NAME)?;
    check_description(description)?;
    let record = CollectionRecord {
        id: uuid::Uuid::now_v7().to_string(),
        owner_id: owner_id.to_owned(),
        name: name.trim().to_owned(),
        description: description.trim().to_owned(),
        created_at: state.clock.now_secs(),
        shares: Vec::new(),
        retention_exempt: false,
    };
    let store = state.store.clone();
    let saved = record.clone();
    blocking(move || store.create_collection(&saved)).await?;
    Ok(CollectionView {
        record,
        role: Access::Owner,
        file_count: 0,
    })
}

/// The collection and the user's role in it; 404 without access, 403 below `needed`.
pub async fn load(
    state: &AppState,
    user_id: &str,
    collection_id: &str,
    needed: Access,
) -> Result<(CollectionRecord, Access)> {
    let store = state.store.clone();
    let (user_id, collection_id) = (user_id.to_owned(), collection_id.to_owned());
    let (record, role) = blocking(move || store.collection_for(&user_id, &collection_id))
        .await?
        .ok_or_else(|| Error::not_found("collection"))?;
    if role < needed {
        return Err(Error::new(
            "forbidden",
            format!("this needs {} access to the collection", needed.as_str()),
        ));
    }
    Ok((record, role))
}

pub async fn detail(
    state: &AppState,
    user_id: &str,
    collection_id: &str,
) -> Result<CollectionDetail> {
    let (record, role) = load(state, user_id, collection_id, Access::Viewer).await?;
    let store = state.store.clone();
    let shares = record.shares.clone();
    let id = record.id.clone();
    let (files, members) = blocking(move || {
        let files = store.collection_files(&id)?;
        let mut members = Vec::new();
        for share in &shares {
            if let Some(member) = store.get_user(&share.user_id)? {
                members.push(Member {
                    user_id: member.id,
                    username: member.username,
                    role: share.role,
                });
            }
        }
        Ok::<_, Error>((files, members))
    })
    .await?;
    let files = files
        .into_iter()
        .map(|file| {
            let access = if file.owner_id == user_id {
                Access::Owner
            } else {
                role.min(Access::Editor)
            };
            (file, access)
        })
        .collect();
    Ok(CollectionDetail {
        record,
        role,
        files,
        members,
    })
}

/// Changes a collection on its current record (one transaction, so concurrent edits and
/// shares are all kept) and tells search which files changed readers.
async fn save(
    state: &AppState,
    id: String,
    change: impl FnOnce(&mut CollectionRecord) -> Result<()> + Send + 'static,
) -> Result<CollectionRecord> {
    let store = state.store.clone();
    let (record, changed) = blocking(move || store.update_collection(&id, change)).await?;
    state.files_changed(changed);
    Ok(record)
}

/// The owner's change of name and/or description.
pub async fn update(
    state: &AppState,
    user_id: &str,
    collection_id: &str,
    name: Option<String>,
    description: Option<String>,
    retention_exempt: Option<bool>,
    actor: &Actor,
) -> Result<CollectionView> {
    let (record, role) = load(state, user_id, collection_id, Access::Owner).await?;
    if let Some(name) = &name {
        check_text(name, "name", MAX_NAME)?;
    }
    if let Some(description) = &description {
        check_description(description)?;
    }
    let record = save(state, record.id, move |record| {
        if let Some(name) = name {
            record.name = name.trim().to_owned();
        }
        if let Some(description) = description {
            record.description = description.trim().to_owned();
        }
        if let Some(exempt) = retention_exempt {
            record.retention_exempt = exempt;
        }
        Ok(())
    })
    .await?;
    if let Some(exempt) = retention_exempt {
        let detail = format!("collection {} retention_exempt={exempt}", record.name);
        audit::record(
            state,
            actor,
            "settings.change",
            Some(&record.id),
            Some(detail),
        )
        .await;
    }
    let store = state.store.clone();
    let id = record.id.clone();
    let file_count = blocking(move || store.collection_files(&id)).await?.len();
    Ok(CollectionView {
        record,
        role,
        file_count,
    })
}

pub async fn delete(state: &AppState, user_id: &str, collection_id: &str) -> Result<()> {
    let (record, _) = load(state, user_id, collection_id, Access::Owner).await?;
    let store = state.store.clone();
    let files = blocking(move || store.delete_collection(&record.id)).await?;
    state.files_changed(files);
    Ok(())
}

/// Puts a file in a collection (editor access to the collection and ownership of the file)
/// or takes it out (editor access); 404 when the file is not there to take out.
pub async fn set_file(
    state: &AppState,
    user_id: &str,
    collection_id: &str,
    file_id: &str,
    add: bool,
) -> Result<()> {
    let (collection, _) = load(state, user_id, collection_id, Access::Editor).await?;
    let store = state.store.clone();
    let (user_id, file_id) = (user_id.to_owned(), file_id.to_owned());
    let changed_id = file_id.clone();
    let changed = blocking(move || {
        if add {
            store
                .file_with_access(&user_id, &file_id, Access::Owner)?
                .ok_or_else(|| Error::not_found("file"))?;
        }
        Ok::<_, Error>(store.set_collection_file(&collection.id, &file_id, add)?)
    })
    .await?;
    if !add && !changed {
        return Err(Error::not_found("file"));
    }
    state.files_changed(vec![changed_id]);
    Ok(())
}

/// The owner shares the collection with an enabled user by name, as `viewer` or `editor`
/// (sharing again changes the role).
pub async fn share(
    state: &AppState,
    user_id: &str,
    collection_id: &str,
    username: &str,
    role: &str,
    actor: &Actor,
) -> Result<Member> {
    let role = match Access::parse(role) {
        Some(role @ (Access::Viewer | Access::Editor)) => role,
        _ => return Err(Error::bad_request("role must be viewer or editor")),
    };
    let (record, _) = load(state, user_id, collection_id, Access::Owner).await?;
    let store = state.store.clone();
    let username = username.to_owned();
    let member: UserRecord = blocking(move || store.get_user_by_name(&username))
        .await?
        .filter(|u| !u.disabled)
        .ok_or_else(|| Error::not_found("user"))?;
    if member.id == record.owner_id {
        return Err(Error::bad_request("the owner already has the collection"));
    }
    let member_id = member.id.clone();
    let collection_id = record.id.clone();
    save(state, record.id, move |record| {
        upsert_share(&mut record.shares, &member_id, role);
        Ok(())
    })
    .await?;
    let detail = format!("with {} as {}", member.username, role.as_str());
    audit::record(
        state,
        actor,
        "collection.share",
        Some(&collection_id),
        Some(detail),
    )
    .await;
    Ok(Member {
        user_id: member.id,
        username: member.username,
        role,
    })
}

/// The owner removes a member, or a member leaves.
pub async fn unshare(
    state: &AppState,
    user_id: &str,
    collection_id: &str,
    member: &str,
    actor: &Actor,
) -> Result<()> {
    let (record, _) = load(state, user_id, collection_id, Access::Viewer).await?;
    if record.owner_id != user_id && member != user_id {
        return Err(Error::new(
            "forbidden",
            "only the collection's owner may remove other members",
        ));
    }
    let member = member.to_owned();
    let detail = format!("member {member}");
    let collection_id = record.id.clone();
    save(state, record.id, move |record| {
        let before = record.shares.len();
        record.shares.retain(|s| s.user_id != member);
        if record.shares.len() == before {
            return Err(Error::not_found("member"));
        }
        Ok(())
    })
    .await?;
    audit::record(
        state,
        actor,
        "collection.unshare",
        Some(&collection_id),
        Some(detail),
    )
    .await;
    Ok(())
}
